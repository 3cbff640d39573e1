"""A :class:`~selector.backends.base.Policy` on Hugging Face ``transformers``, for the CPU.

:class:`TransformersPolicy` loads a causal language model from local files only (it never
downloads) and samples reasoning steps with its own batched decoding loop:

* **Sources.** A GGUF file (``model=<dir>, gguf_file=<name>``, or ``model=<path/to/x.gguf>``)
  or a plain Hugging Face directory (``config.json`` plus ``*.safetensors``). A GGUF file is
  converted once to a safetensors cache (:mod:`selector.backends.gguf_cache`) and later loads
  read the cache. Weights are read with ``use_safetensors=True`` only: no pickle anywhere.
* **Lazy.** The constructor validates its arguments and touches no weights; the model loads
  on first use (thread-safe) or on an explicit :meth:`TransformersPolicy.load`.
* **Sampling.** ``generate_steps`` flattens every request's ``n`` continuations into rows,
  sorts them by prefix length, and decodes them in chunks of ``max_batch_size`` rows with a
  KV cache, left padding, explicit ``attention_mask`` and ``position_ids``. Each distinct
  prefix in a chunk is prefilled once and its cache copied to its rows. Row ``j`` of a request
  with seed ``s`` draws its randomness from a ``torch.Generator`` seeded with
  ``derive_seed(s, j)`` and its own logits only, so a continuation does not depend on which
  other requests share the batch (up to float rounding of batched matrix products, which
  changes a sampled token only when a draw falls within ~1e-6 of a token boundary). A row
  stops at EOS, at the step delimiter (:func:`selector.steps.cut_at_delimiter`; the text is
  cut right after it) unless ``to_completion``, or at its token cap; finished rows leave the
  running batch at once so the tail of a batch is cheap.
* **Shared prefix.** With ``share_prefix`` (the default), the longest token prefix that all of
  a chunk's distinct prefixes share (typically chat template + system prompt + few-shot turns)
  is prefilled once at batch size 1, and only the rest of each prefix (its *suffix*) is
  prefilled in the batch: ``[shared prefix KV][left padding][suffix]``, the padding masked out
  in the middle and positions continuing from the shared length. The shared KV is kept in a
  small cache on the policy (the most recent few token sequences, unchanged by decoding), so
  later chunks and calls that start with the same tokens reuse it; a partial match reuses the
  common part and computes the rest. Used when the shared part has at least
  ``_MIN_SHARED_TOKENS`` tokens (one token of each prefix is always left to the suffix, for its
  logits) and the model's cache layers are all plain full-attention ``DynamicLayer`` ones; otherwise
  the whole prefix is prefilled as above. Results agree with ``share_prefix=False`` up to float
  rounding (the same numbers, computed in differently shaped batches).

Decoded text skips special tokens (as vLLM does by default); an EOS token is never part of
the text but is counted in ``num_tokens`` (it was generated).
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

from ..threads import configure_threads

configure_threads()  # before torch loads OpenMP: yield instead of spin (see selector/threads.py)
import torch  # noqa: E402

from ..seeds import derive_seed
from ..steps import cut_at_delimiter
from .base import Continuation, SamplingParams, StepOutput, StepRequest, check_step_requests
from .hf_common import (
    DTYPES,
    FALLBACK_PROMPT_FORMAT,
    bos_to_prepend,
    check_batch_size,
    check_prompt_args,
    check_sampling_args,
    count_parameters,
    count_parameters_from_config,
    encode_prefix,
    format_chat_prompt,
    load_progress,
    parse_device,
    parse_dtype,
    resolve_model_source,
)

from .gguf_cache import GGUFCache, default_cache_dir

__all__ = ["TransformersPolicy", "FALLBACK_PROMPT_FORMAT"]

log = logging.getLogger(__name__)

# Top-p first looks for the nucleus among this many most likely tokens, then widens.
_TOP_P_FIRST_K = 256
# Shared-prefix prefill: the shortest shared (or cache-matched) part worth reusing, and how many
# shared prefixes the policy keeps (least recently used dropped first).
_MIN_SHARED_TOKENS = 16
_PREFIX_CACHE_ENTRIES = 4


@dataclasses.dataclass
class _Row:
    """One continuation being sampled."""

    request: int
    index: int  # continuation index j within its request
    prefix: int  # index into the chunk's distinct prefixes
    params: SamplingParams
    to_completion: bool
    cap: int
    generator: torch.Generator | None
    tokens: list[int] = dataclasses.field(default_factory=list)
    result: Continuation | None = None
    logprob: float = 0.0  # sum of the sampled tokens' log-probabilities (when params.logprobs)


class TransformersPolicy:
    """A local causal LM that samples reasoning steps (see the module docstring).

    Args:
        model: a Hugging Face model directory, a directory holding ``gguf_file``, or the path
            of a ``.gguf`` file. Local paths only; nothing is downloaded.
        gguf_file: the GGUF file's name inside ``model`` (a directory).
        tokenizer: a tokenizer directory; default: the model's own (or the GGUF's).
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or ``"auto"``.
        device: a torch device string; sampling itself always runs on the CPU.
        system_prompt: an optional system turn for :meth:`format_prompt`.
        few_shot: ``(question, answer)`` worked examples, as prior user/assistant turns.
        step_delimiter: the text that ends a step (kept in the step).
        sampling: overrides for :meth:`default_sampling_params` (``SamplingParams`` fields).
        max_batch_size: most rows (continuations) decoded together.
        cache_dir: where GGUF conversions are cached (default ``$TTS_SELECTOR_CACHE`` or
            ``~/.cache/tts-selector``).
        trust_remote_code: passed to ``from_pretrained`` as given.
        id: the policy's name; default the GGUF file's stem or the model directory's name.
        share_prefix: prefill the token prefix shared by a chunk's rows once, and keep it for
            later calls (see the module docstring); ``False``: prefill every distinct prefix whole.
    """

    def __init__(
        self,
        model: str,
        *,
        gguf_file: str | None = None,
        tokenizer: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        system_prompt: str | None = None,
        few_shot: Sequence[tuple[str, str]] = (),
        step_delimiter: str = "\n\n",
        sampling: dict | None = None,
        max_batch_size: int = 64,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        id: str | None = None,
        share_prefix: bool = True,
    ) -> None:
        self._gguf_path, self._model_dir = resolve_model_source(model, gguf_file, "TransformersPolicy")
        self._tokenizer_dir = self._resolve_tokenizer(tokenizer)

        self.dtype = parse_dtype(dtype, " (float32 is the fast choice on CPUs without bfloat16 support)")
        self.device = parse_device(device)

        self.system_prompt, self.few_shot = check_prompt_args(system_prompt, few_shot)
        self.step_delimiter = step_delimiter
        self.sampling, self._default_params = check_sampling_args(step_delimiter, sampling)

        self.max_batch_size = check_batch_size(max_batch_size)
        self.trust_remote_code = trust_remote_code
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._gguf = GGUFCache(self._gguf_path, self.cache_dir, trust_remote_code) if self._gguf_path is not None else None
        if not isinstance(share_prefix, bool):
            raise TypeError(f"share_prefix must be a bool, got {share_prefix!r}")
        self.share_prefix = share_prefix

        if id is None:
            if self._gguf_path is not None:
                id = self._gguf_path.name[: -len(".gguf")] if self._gguf_path.name.lower().endswith(".gguf") else self._gguf_path.name
            else:
                id = self._model_dir.resolve().name
        if not isinstance(id, str) or not id:
            raise ValueError(f"id must be a non-empty string, got {id!r}")
        self.id = id

        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._num_parameters: int | None = None
        self.load_info: dict[str, Any] = {}
        self.last_stats: dict[str, Any] = {}
        # token tuple -> per-layer (keys, values) of batch size 1; least recently used first.
        self._prefix_cache: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _resolve_tokenizer(tokenizer: str | None) -> Path | None:
        if tokenizer is None:
            return None
        path = Path(tokenizer).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"tokenizer directory {str(path)!r} does not exist; pass a local tokenizer directory "
                "(tokenizer.json / tokenizer_config.json) or leave tokenizer=None to use the model's."
            )
        return path

    # ------------------------------------------------------------------ loading
    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def gguf_cache_path(self) -> Path | None:
        """The cache folder of this GGUF file (hashes the file once); None for HF directories."""
        return self._gguf.path if self._gguf is not None else None

    def load(self) -> "TransformersPolicy":
        """Load tokenizer and model now (idempotent, thread-safe). Returns ``self``."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._load_locked()
        return self

    def _torch_dtype(self) -> Any:
        return DTYPES[self.dtype]

    def _load_locked(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        common = {"local_files_only": True, "trust_remote_code": self.trust_remote_code}
        tokenizer = None
        if self._tokenizer_dir is not None:
            tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_dir), **common)

        if self._gguf_path is None:
            source = "hf"
            with load_progress(self._model_dir):
                model = AutoModelForCausalLM.from_pretrained(
                    str(self._model_dir), dtype=self._torch_dtype(), use_safetensors=True, **common
                )
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(str(self._model_dir), **common)
        else:
            assert self._gguf is not None
            cache = self._gguf.path
            if self._gguf.complete():
                source = "cache"
                with load_progress(cache):
                    model = AutoModelForCausalLM.from_pretrained(
                        str(cache), dtype=self._torch_dtype(), use_safetensors=True, **common
                    )
                if tokenizer is None:
                    tokenizer = AutoTokenizer.from_pretrained(str(cache), **common)
            else:
                source = "gguf"
                model, gguf_tokenizer = self._gguf.convert()
                if tokenizer is None:
                    tokenizer = gguf_tokenizer
                if self._torch_dtype() not in ("auto", torch.float32):
                    model = model.to(self._torch_dtype())

        model.eval()
        model.to(self.device)
        self._setup(model, tokenizer)
        self._num_parameters = count_parameters(model)
        self.load_info = {
            "source": source,
            "seconds": time.perf_counter() - start,
            "path": str(self._gguf_path or self._model_dir),
            "cache": str(self.gguf_cache_path) if self._gguf_path is not None else None,
        }
        log.info("loaded %s from %s in %.1f s", self.id, source, self.load_info["seconds"])
        # Publish last: other threads test ``self._model`` without the lock.
        self._tokenizer = tokenizer
        self._model = model

    def ensure_gguf_cache(self) -> Path:
        """The safetensors folder of this policy's GGUF file, converting it once if needed
        (:meth:`GGUFCache.ensure`: raises if the folder cannot be written)."""
        if self._gguf is None:
            raise ValueError(f"{self!r} reads a Hugging Face directory, not a GGUF file: there is nothing to convert")
        return self._gguf.ensure()

    def _setup(self, model: Any, tokenizer: Any) -> None:
        """Derive what the decoding loop needs from the loaded model and tokenizer."""
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._keep_kwarg = "logits_to_keep" if "logits_to_keep" in params else None

        eos: set[int] = set()
        for value in (
            tokenizer.eos_token_id,
            getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        ):
            if value is None:
                continue
            eos.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        self._eos_ids = frozenset(eos)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = min(eos) if eos else 0
        self._pad_id = int(pad)
        # Prepend BOS only where the tokenizer itself would (and the text lacks it).
        self._bos_id = bos_to_prepend(tokenizer)
        self._max_positions = getattr(model.config, "max_position_embeddings", None)
        # Shared-prefix prefill puts padding between the shared KV and each suffix: sound for
        # full attention (the 2D mask is applied per key position), not for sliding windows
        # or recurrent layers, whose state would see the padding or count it as distance.
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        layers = DynamicCache(config=model.config).layers
        self._can_share_prefix = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
        self._prefix_cache.clear()

    @property
    def model(self) -> Any:
        """The loaded ``transformers`` model (loads it if needed)."""
        return self.load()._model

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (loads the policy if needed)."""
        return self.load()._tokenizer

    @property
    def num_parameters(self) -> int:
        """Parameter count (tied embeddings once). Before loading it is read from the config by
        building the architecture on the ``meta`` device (no weights read)."""
        if self._num_parameters is None:
            with self._load_lock:
                if self._num_parameters is None:
                    self._num_parameters = self._count_without_loading()
        return self._num_parameters

    def _count_without_loading(self) -> int:
        from transformers import AutoConfig, AutoModelForCausalLM

        common = {"local_files_only": True, "trust_remote_code": self.trust_remote_code}
        if self._gguf is None:
            config = AutoConfig.from_pretrained(str(self._model_dir), **common)
        else:
            config = self._gguf.config()
        return count_parameters_from_config(config, AutoModelForCausalLM, self.trust_remote_code)

    # ------------------------------------------------------------------ prompts
    def format_prompt(self, question: str) -> str:
        """Chat-template prompt: system prompt, few-shot turns, the question, assistant header.

        Without a chat template, the plain format in :data:`FALLBACK_PROMPT_FORMAT`
        (:func:`~selector.backends.hf_common.format_chat_prompt`, shared with the vLLM policy).
        """
        return format_chat_prompt(self.tokenizer, question, system_prompt=self.system_prompt, few_shot=self.few_shot)

    def default_sampling_params(self) -> SamplingParams:
        return self._default_params

    def encode(self, text: str) -> list[int]:
        """Token ids of a prefix as the model reads it (no special tokens added, except a BOS
        where the tokenizer adds one by default and the text does not start with it)."""
        return encode_prefix(self.tokenizer, text, self._bos_id)

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        return f"TransformersPolicy(id={self.id!r}, {state})"

    # ------------------------------------------------------------------ generation
    def generate_steps(self, requests: Sequence[StepRequest]) -> list[StepOutput]:
        """One :class:`StepOutput` per request, in order (see the module docstring).

        ``prompt_tokens`` is the prefix's token count, once per request (0 when ``n == 0``:
        nothing is read). Calls are serialized; ``last_stats`` describes the latest one.
        """
        requests = check_step_requests(requests)
        if not requests:
            return []
        self.load()
        with self._generate_lock, torch.inference_mode():
            return self._generate_locked(requests)

    def _generate_locked(self, requests: list[StepRequest]) -> list[StepOutput]:
        start = time.perf_counter()
        prefix_ids = [self.encode(r.prefix) if r.n else [] for r in requests]
        rows: list[_Row] = []
        for i, req in enumerate(requests):
            if req.n == 0:
                continue
            if not prefix_ids[i]:
                raise ValueError(
                    f"requests[{i}].prefix is empty and this tokenizer adds no BOS: give the model some text "
                    "(e.g. policy.format_prompt(question))"
                )
            cap = req.params.max_tokens if req.to_completion else req.params.max_step_tokens
            if self._max_positions:
                room = self._max_positions - len(prefix_ids[i])
                if room < 1:
                    from ..errors import InputError

                    raise InputError(
                        f"the prompt is too long: requests[{i}].prefix has {len(prefix_ids[i])} tokens and the model's "
                        f"context is {self._max_positions} tokens: shorten the question (or use fewer few-shot examples or steps)"
                    )
                cap = min(cap, room)
            for j in range(req.n):
                greedy = req.params.temperature == 0
                generator = None if greedy else torch.Generator().manual_seed(derive_seed(req.seed, j))
                rows.append(_Row(i, j, -1, req.params, req.to_completion, cap, generator))
        # Longest prefixes first (peak memory early); identical prefixes adjacent.
        rows.sort(key=lambda r: (-len(prefix_ids[r.request]), prefix_ids[r.request], r.request, r.index))

        stats = {
            "rows": len(rows),
            "chunks": 0,
            "prefill_tokens": 0,  # prompt tokens actually run through the model (no padding)
            "prefill_seconds": 0.0,
            "shared_prefix_tokens": 0,  # per chunk, the prefix tokens its rows shared
            "prefix_cache_hits": 0,  # chunks whose shared prefix came whole from the cache
            "prefix_cache_tokens": 0,  # shared-prefix tokens read from the cache, not computed
            "decode_steps": 0,
            "row_steps": 0,
        }
        for lo in range(0, len(rows), self.max_batch_size):
            self._run_chunk(rows[lo : lo + self.max_batch_size], prefix_ids, stats)
            stats["chunks"] += 1

        outputs: list[list[Continuation | None]] = [[None] * r.n for r in requests]
        for row in rows:
            outputs[row.request][row.index] = row.result
        # What this call did not compute, of the prompt tokens it was asked to read: prefixes
        # shared by several requests (prefilled once) and KV reused from the prefix cache. The
        # reuse is per chunk, not per request, so it is apportioned by prompt length.
        prompt_total = sum(len(prefix_ids[i]) for i, req in enumerate(requests) if req.n)
        reused = max(0, prompt_total - stats["prefill_tokens"])
        result = []
        for i, req in enumerate(requests):
            tokens = len(prefix_ids[i]) if req.n else 0
            cached = min(tokens, round(reused * tokens / prompt_total)) if prompt_total else 0
            result.append(StepOutput(continuations=tuple(outputs[i]), prompt_tokens=tokens, cached_tokens=cached))
        stats["cached_prompt_tokens"] = sum(out.cached_tokens for out in result)
        stats["generated_tokens"] = sum(c.num_tokens for out in result for c in out.continuations)
        stats["prompt_tokens"] = sum(out.prompt_tokens for out in result)
        stats["seconds"] = time.perf_counter() - start
        self.last_stats = stats
        return result

    def _forward(self, cache: Any, **inputs: Any) -> torch.Tensor:
        """Last-position logits (float32, on the CPU) of one forward pass with the KV cache."""
        kwargs = {self._cache_kwarg: cache, "use_cache": True, **inputs}
        if self._keep_kwarg is not None:
            kwargs[self._keep_kwarg] = 1
        logits = self._model(**kwargs).logits
        return logits[:, -1, :].float().cpu()

    def clear_prefix_cache(self) -> None:
        """Forget the stored shared-prefix KV caches (they are rebuilt on demand)."""
        with self._generate_lock:
            self._prefix_cache.clear()

    def _shared_length(self, prefixes: list[tuple[int, ...]]) -> int:
        """Tokens of the chunk's common prefix to prefill once (0: prefill every prefix whole)."""
        if not self.share_prefix or not self._can_share_prefix:
            return 0
        # The lexicographically smallest and largest prefixes share exactly what all share.
        shared = _common_length(min(prefixes), max(prefixes))
        shared = min(shared, min(len(p) for p in prefixes) - 1)  # leave each row a token for logits
        return shared if shared >= _MIN_SHARED_TOKENS else 0

    def _shared_kv(
        self, tokens: tuple[int, ...], stats: dict[str, Any]
    ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per-layer (keys, values), batch size 1, of ``tokens``: from the prefix cache where it
        holds them (or a long enough start of them), computing only the rest. None if the
        model's cache does not expose them (the caller then prefills whole prefixes)."""
        from transformers import DynamicCache

        store = self._prefix_cache
        entry = store.get(tokens)
        if entry is not None:
            store.move_to_end(tokens)
            stats["prefix_cache_hits"] += 1
            stats["prefix_cache_tokens"] += len(tokens)
            return entry
        best_key, best = None, 0
        for key in store:
            common = _common_length(key, tokens)
            if common > best:
                best_key, best = key, common
        if best_key is not None and best >= _MIN_SHARED_TOKENS:
            store.move_to_end(best_key)
            stats["prefix_cache_tokens"] += best
            if best == len(tokens):  # a prefix of a stored sequence: a slice of its KV
                stats["prefix_cache_hits"] += 1
                return [(k[:, :, :best], v[:, :, :best]) for k, v in store[best_key]]
            cache = DynamicCache(
                ddp_cache_data=[(k[:, :, :best], v[:, :, :best]) for k, v in store[best_key]],
                config=self._model.config,
            )
        else:
            best = 0
            cache = DynamicCache(config=self._model.config)
        device = self.device
        self._forward(
            cache,
            input_ids=torch.tensor([tokens[best:]], dtype=torch.long, device=device),
            attention_mask=torch.ones((1, len(tokens)), dtype=torch.long, device=device),
            position_ids=torch.arange(best, len(tokens), dtype=torch.long, device=device)[None],
        )
        stats["prefill_tokens"] += len(tokens) - best
        layers = cache.layers
        if not all(getattr(layer, "keys", None) is not None and layer.keys.shape[-2] == len(tokens)
                   for layer in layers):
            self._can_share_prefix = False  # e.g. layers sharing another layer's KV
            log.warning("shared-prefix prefill disabled: this model's cache layers do not hold their own KV")
            return None
        # ``DynamicLayer`` never writes into its tensors in place (update concatenates into new
        # ones, batch selection indexes into new ones), and every use below copies them into a
        # fresh cache: a stored entry never changes.
        entry = [(layer.keys, layer.values) for layer in layers]
        store[tokens] = entry
        while len(store) > _PREFIX_CACHE_ENTRIES:
            store.popitem(last=False)
        return entry

    def _prefill(
        self, prefixes: list[tuple[int, ...]], stats: dict[str, Any]
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Prefill the distinct prefixes: (cache, last-position logits, 2D attention mask)."""
        from transformers import DynamicCache

        device = self.device
        shared = self._shared_length(prefixes)
        entry = self._shared_kv(prefixes[0][:shared], stats) if shared else None
        if entry is None:
            shared = 0
            cache = DynamicCache(config=self._model.config)
        else:
            # The shared KV copied once per distinct prefix (the cache concatenates into new tensors).
            batch = len(prefixes)
            cache = DynamicCache(
                ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in entry],
                config=self._model.config,
            )
            stats["shared_prefix_tokens"] += shared
        # Layout per row: [shared prefix][left padding][rest of its prefix]; the mask is 0 on the
        # padding, and positions count real tokens only (shared + index in the rest).
        rests = [p[shared:] for p in prefixes]
        width = max(len(r) for r in rests)
        input_ids = torch.full((len(rests), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(rests), shared + width), dtype=torch.long)
        attention[:, :shared] = 1
        for k, ids in enumerate(rests):
            input_ids[k, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[k, shared + width - len(ids) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        logits = self._forward(
            cache,
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
        )
        stats["prefill_tokens"] += sum(len(r) for r in rests)
        return cache, logits, attention

    def _run_chunk(self, rows: list[_Row], prefix_ids: list[list[int]], stats: dict[str, Any]) -> None:
        device = self.device
        distinct: dict[tuple[int, ...], int] = {}
        for row in rows:
            row.prefix = distinct.setdefault(tuple(prefix_ids[row.request]), len(distinct))
        prefixes = list(distinct)
        started = time.perf_counter()
        cache, logits, attention = self._prefill(prefixes, stats)
        stats["prefill_seconds"] += time.perf_counter() - started

        # Give each row its prefix's cache (a copy per row; the rows then diverge).
        source = torch.tensor([row.prefix for row in rows], dtype=torch.long)
        if len(rows) != len(prefixes) or not torch.equal(source, torch.arange(len(rows))):
            cache.batch_select_indices(source.to(device))
            logits, attention = logits[source], attention[source]
        next_pos = attention.sum(-1)  # position of the token each row generates next
        attention = attention.to(device)

        active = list(rows)
        while True:
            finished = []
            for b, row in enumerate(active):
                token = self._sample(logits[b], row)
                row.tokens.append(token)
                if row.params.logprobs:  # the model's own, unscaled probability of what it sampled
                    row.logprob += float(torch.log_softmax(logits[b], dim=-1)[token])
                self._check_stop(row, token)
                if row.result is not None:
                    finished.append(b)
            if len(finished) == len(active):
                break
            new_tokens = torch.tensor([row.tokens[-1] for row in active], dtype=torch.long)
            if finished:
                keep = torch.tensor([b for b, row in enumerate(active) if row.result is None], dtype=torch.long)
                cache.batch_select_indices(keep.to(device))
                attention, new_tokens, next_pos = attention[keep.to(device)], new_tokens[keep], next_pos[keep]
                active = [row for row in active if row.result is None]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            logits = self._forward(
                cache,
                input_ids=new_tokens[:, None].to(device),
                attention_mask=attention,
                position_ids=next_pos[:, None].to(device),
            )
            next_pos = next_pos + 1
            stats["decode_steps"] += 1
            stats["row_steps"] += len(active)

    def _decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=True)

    def _check_stop(self, row: _Row, token: int) -> None:
        logprob = row.logprob if row.params.logprobs else None
        if token in self._eos_ids:
            row.result = Continuation(self._decode(row.tokens[:-1]), len(row.tokens), "eos", logprob)
            return
        delimiter = row.params.step_delimiter
        text = None
        if delimiter and not row.to_completion:
            # Re-decoding the step so far is O(step tokens) per row and step: steps are short.
            text = self._decode(row.tokens)
            step = cut_at_delimiter(text, delimiter)
            if step is not None:
                row.result = Continuation(step, len(row.tokens), "delimiter", logprob)
                return
        if len(row.tokens) >= row.cap:
            row.result = Continuation(text if text is not None else self._decode(row.tokens), len(row.tokens), "length",
                                      logprob)

    @staticmethod
    def _sample(logits: torch.Tensor, row: _Row) -> int:
        """Draw one token for ``row`` from its own last-position logits (float32, CPU).

        Temperature, then top-k, then top-p on the renormalized top-k distribution; the draw is
        an inverse-CDF lookup of one uniform from the row's own generator.
        """
        params = row.params
        if params.temperature == 0:
            return int(torch.argmax(logits))
        scaled = logits / params.temperature
        vocab = scaled.shape[-1]
        order = None  # token ids of ``probs`` when they are a sorted candidate list
        if 0 < params.top_k < vocab:
            values, order = torch.topk(scaled, params.top_k)
            probs = torch.softmax(values, dim=-1)
        elif params.top_p < 1.0:
            full = torch.softmax(scaled, dim=-1)
            k = min(vocab, _TOP_P_FIRST_K)
            while True:
                probs, order = torch.topk(full, k)
                if k == vocab or float(probs.sum()) >= params.top_p:
                    break
                k = min(vocab, k * 8)
        else:
            probs = torch.softmax(scaled, dim=-1)
        probs = probs.double()
        if params.top_p < 1.0 and order is not None:
            before = torch.cumsum(probs, dim=-1) - probs  # mass of the more likely tokens
            kept = max(1, int((before < params.top_p).sum()))
            probs, order = probs[:kept], order[:kept]
        cdf = torch.cumsum(probs, dim=-1)
        u = torch.rand((), generator=row.generator, dtype=torch.float64) * cdf[-1]
        pick = min(int(torch.searchsorted(cdf, u.reshape(1), right=True)), cdf.shape[0] - 1)
        while pick > 0 and probs[pick] == 0:  # only if rounding put u at the very end
            pick -= 1
        return int(order[pick]) if order is not None else pick


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
