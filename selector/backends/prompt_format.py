"""A model's prompt format without an engine: what a served model's prompts are written with.

:class:`PromptFormat` holds a model's tokenizer (a tokenizer directory, the model directory, or
the GGUF file's safetensors conversion, :mod:`selector.backends.gguf_cache`), the system prompt
and the few-shot turns, and writes a question's prompt exactly as the transformers backend does
(:func:`~selector.backends.hf_common.format_chat_prompt`). The vLLM policy formats and tokenizes
its prompts with one, and an ``openai`` spec with a ``preset`` formats the prompts it sends to
a server of that model with one, so a preset gives byte-identical prompts on every backend.
Nothing loads until a prompt is formatted; no weights are ever read.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from .hf_common import (bos_to_prepend, check_prompt_args, count_parameters_from_config, encode_prefix,
                        format_chat_prompt, resolve_model_source)


class PromptFormat:
    """The prompt format of ``model`` (a Hugging Face directory, a directory holding
    ``gguf_file``, or a ``.gguf`` path; local paths only). ``tokenizer``: a tokenizer directory
    (default: the model's own); ``cache_dir``: where a GGUF file's conversion is cached."""

    def __init__(self, model: str, *, gguf_file: str | None = None, tokenizer: str | None = None,
                 system_prompt: str | None = None, few_shot: Sequence[tuple[str, str]] = (),
                 cache_dir: str | None = None, trust_remote_code: bool = False, what: str = "PromptFormat"):
        self.gguf_path, self.source_dir = resolve_model_source(model, gguf_file, what)
        if tokenizer is not None and not Path(tokenizer).expanduser().is_dir():
            raise FileNotFoundError(
                f"tokenizer directory {str(tokenizer)!r} does not exist; pass a local tokenizer directory "
                "or leave tokenizer=None to use the model's."
            )
        self.tokenizer_dir = Path(tokenizer).expanduser() if tokenizer is not None else None
        self.system_prompt, self.few_shot = check_prompt_args(system_prompt, few_shot)
        self.cache_dir = cache_dir
        self.trust_remote_code = trust_remote_code
        self._lock = threading.Lock()
        self._model_dir: Path | None = None if self.gguf_path is not None else self.source_dir
        self._gguf: Any = None
        if self.gguf_path is not None:  # one cache record: the GGUF file is hashed once, not per use
            from .gguf_cache import GGUFCache

            self._gguf = GGUFCache(self.gguf_path, cache_dir, trust_remote_code)
        self._tokenizer: Any = None
        self._bos_id: int | None = None
        self._num_parameters: int | None = None

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any]) -> "PromptFormat":
        """The prompt format of a preset mapping (:func:`selector.backends.registry.load_preset`)."""
        keys = ("gguf_file", "tokenizer", "system_prompt", "few_shot", "cache_dir", "trust_remote_code")
        return cls(str(preset["model"]), **{k: preset[k] for k in keys if k in preset})

    @property
    def model_dir(self) -> Path:
        """The model directory, or the GGUF file's safetensors conversion (converted on first
        access if it is not cached yet)."""
        if self._model_dir is None:
            with self._lock:
                if self._model_dir is None:
                    self._model_dir = self._gguf.ensure()
        return self._model_dir

    @property
    def tokenizer(self) -> Any:
        """The ``transformers`` tokenizer prompts are written and encoded with (loaded once)."""
        if self._tokenizer is None:
            source = self.tokenizer_dir or self.model_dir
            with self._lock:
                if self._tokenizer is None:
                    from transformers import AutoTokenizer

                    tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True,
                                                        trust_remote_code=self.trust_remote_code)
                    self._bos_id = bos_to_prepend(tok)
                    self._tokenizer = tok
        return self._tokenizer

    def format_prompt(self, question: str) -> str:
        """Chat-template prompt: system prompt, few-shot turns, the question, assistant header."""
        return format_chat_prompt(self.tokenizer, question, system_prompt=self.system_prompt, few_shot=self.few_shot)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prefix as a backend reads it (a BOS only where the tokenizer adds one)."""
        tokenizer = self.tokenizer
        return encode_prefix(tokenizer, text, self._bos_id)

    @property
    def num_parameters(self) -> int:
        """The model's parameter count (tied embeddings once), from its config on the ``meta``
        device: no weights read (a GGUF file's own metadata when it is not converted yet)."""
        if self._num_parameters is None:
            from transformers import AutoConfig, AutoModelForCausalLM

            config = (self._gguf.config() if self._gguf is not None else
                      AutoConfig.from_pretrained(str(self.source_dir), local_files_only=True,
                                                 trust_remote_code=self.trust_remote_code))
            self._num_parameters = count_parameters_from_config(config, AutoModelForCausalLM, self.trust_remote_code)
        return self._num_parameters
