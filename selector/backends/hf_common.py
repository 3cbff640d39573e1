"""What the Hugging Face-based backends share: argument checks, parameter counting, and the
policy prompt format (system prompt, few-shot chat turns, chat template) with its tokenization.

The transformers policy and the vLLM policy both format and tokenize prompts here, so one preset
gives byte-identical prompts (and token ids) on either backend.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from ..threads import configure_threads

configure_threads()  # before torch loads OpenMP: yield instead of spin (see selector/threads.py)
import torch  # noqa: E402

from .base import SamplingParams

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "auto": "auto",
}


def parse_dtype(dtype: Any, hint: str = "") -> str:
    """The normalized dtype name (a key of :data:`DTYPES`), or a ValueError naming the choices."""
    if not isinstance(dtype, str) or dtype.lower() not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(set(DTYPES))}{hint}")
    return dtype.lower()


def parse_device(device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda:0'): {exc}") from exc


def check_batch_size(max_batch_size: Any) -> int:
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
    return max_batch_size


def count_parameters(model: torch.nn.Module) -> int:
    # ``parameters()`` yields a shared (tied) tensor once, so tied embeddings count once.
    return sum(p.numel() for p in model.parameters())


def count_parameters_from_config(config: Any, auto_class: Any, trust_remote_code: bool) -> int:
    """Parameter count of the architecture ``config`` describes, built on the ``meta`` device
    (no weights read, no memory spent)."""
    with torch.device("meta"):
        skeleton = auto_class.from_config(config, trust_remote_code=trust_remote_code)
    return count_parameters(skeleton)


# ---------------------------------------------------------------------------- prompt format
FALLBACK_PROMPT_FORMAT = (
    "Used when the tokenizer has no chat template: the system prompt (if any) and a blank "
    "line, then each worked example as 'Question: {q}\\nAnswer:\\n{a}\\n\\n', then "
    "'Question: {question}\\nAnswer:\\n'."
)
_SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))


def check_prompt_args(system_prompt: Any, few_shot: Any) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """Validated ``(system_prompt, few_shot)``; ``few_shot`` as a tuple of (question, answer) pairs."""
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(f"system_prompt must be a string or None, got {type(system_prompt).__name__}")
    shots = []
    for k, shot in enumerate(few_shot):
        if not isinstance(shot, (tuple, list)) or len(shot) != 2 or not all(isinstance(s, str) for s in shot):
            raise ValueError(f"few_shot[{k}] must be a (question, answer) pair of strings, got {shot!r}")
        shots.append((shot[0], shot[1]))
    return system_prompt, tuple(shots)


def check_sampling_args(step_delimiter: Any, sampling: dict | None) -> tuple[dict, SamplingParams]:
    """Validated sampling overrides and the policy's default :class:`SamplingParams`."""
    if step_delimiter is not None and (not isinstance(step_delimiter, str) or not step_delimiter):
        raise ValueError(
            f"step_delimiter must be a non-empty string (or None: never cut), got {step_delimiter!r}"
        )
    sampling = dict(sampling or {})
    unknown = sorted(set(sampling) - set(_SAMPLING_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown sampling keys {unknown}; valid keys are the SamplingParams fields {list(_SAMPLING_FIELDS)}"
        )
    return sampling, SamplingParams(**{"step_delimiter": step_delimiter, **sampling})


def format_chat_prompt(
    tokenizer: Any,
    question: str,
    *,
    system_prompt: str | None = None,
    few_shot: Sequence[tuple[str, str]] = (),
) -> str:
    """The text that precedes a solution: system prompt, few-shot turns, the question, and the
    assistant header, through the tokenizer's chat template.

    Without a chat template, the plain format in :data:`FALLBACK_PROMPT_FORMAT`. A template that
    rejects a system role gets the system prompt folded into the first user turn.
    """
    if not getattr(tokenizer, "chat_template", None):
        parts = [f"{system_prompt}\n\n"] if system_prompt else []
        parts += [f"Question: {q}\nAnswer:\n{a}\n\n" for q, a in few_shot]
        parts.append(f"Question: {question}\nAnswer:\n")
        return "".join(parts)
    turns: list[dict[str, str]] = []
    for q, a in few_shot:
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    turns.append({"role": "user", "content": question})
    if system_prompt is None:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    try:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": system_prompt}] + turns,
            tokenize=False,
            add_generation_prompt=True,
        )
    except Exception:  # a template without a system role: fold it into the first turn
        turns[0] = {"role": "user", "content": f"{system_prompt}\n\n{turns[0]['content']}"}
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def bos_to_prepend(tokenizer: Any) -> int | None:
    """The BOS id to put in front of a prefix, or None: only where the tokenizer itself adds one
    by default (a chat template that writes its own BOS then does not get a second one)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    with_special = tokenizer("a").input_ids
    if with_special and with_special[0] == bos and tokenizer("a", add_special_tokens=False).input_ids[:1] != [bos]:
        return int(bos)
    return None


def encode_prefix(tokenizer: Any, text: str, bos_id: int | None) -> list[int]:
    """Token ids of a prefix as the model reads it: no special tokens added, except ``bos_id``
    (from :func:`bos_to_prepend`) when the text does not already start with it."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    if bos_id is not None and (not ids or ids[0] != bos_id):
        ids.insert(0, bos_id)
    return ids


def resolve_model_source(model: Any, gguf_file: str | None, who: str) -> tuple[Path | None, Path]:
    """(the GGUF file or None, the model directory) of a local model locator: a Hugging Face
    directory with safetensors weights (pickle weights are never loaded), a directory plus
    ``gguf_file``, or a ``.gguf`` file; otherwise an error naming what to pass. ``who`` names
    the backend in the messages."""
    if not isinstance(model, (str, os.PathLike)) or not str(model):
        raise ValueError(f"model must be a local path (directory or .gguf file), got {model!r}")
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model path {str(path)!r} does not exist. {who} loads local files only "
            "(it never downloads): pass a Hugging Face model directory (config.json + "
            "*.safetensors), a directory plus gguf_file=, or the path of a .gguf file."
        )
    if path.is_file():
        if gguf_file is not None:
            raise ValueError(
                f"model={str(path)!r} is a file and gguf_file={gguf_file!r} was also given: pass "
                "either model=<the .gguf file> or model=<its directory>, gguf_file=<its name>."
            )
        if not path.name.lower().endswith(".gguf"):
            raise ValueError(
                f"model={str(path)!r} is a file but not a .gguf file: pass a GGUF file or a model directory."
            )
        return path, path.parent
    if gguf_file is not None:
        candidate = Path(gguf_file).expanduser()
        candidate = candidate if candidate.is_absolute() else path / candidate
        if not candidate.is_file():
            found = sorted(p.name for p in path.glob("*.gguf"))
            raise FileNotFoundError(
                f"gguf_file {gguf_file!r} not found in {str(path)!r}; GGUF files there: "
                f"{found or 'none'}. Pass one of them as gguf_file=."
            )
        return candidate, path
    if not (path / "config.json").is_file():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = (
            f" It holds GGUF files {ggufs}: pass gguf_file=<one of them>."
            if ggufs
            else " Pass a Hugging Face model directory or a .gguf file."
        )
        raise FileNotFoundError(f"no config.json in model directory {str(path)!r}.{hint}")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
        extra = f" (found pickle weights {pickles}, which are never loaded)" if pickles else ""
        raise FileNotFoundError(
            f"no *.safetensors weights in {str(path)!r}{extra}. Convert the weights to safetensors "
            "(e.g. model.save_pretrained(dir) with a current transformers) or pass a GGUF file."
        )
    return None, path



# Weights above this size take more than a few seconds to load: show transformers' bars then.
_SLOW_LOAD_BYTES = 2 * 1024**3


@contextlib.contextmanager
def load_progress(model_dir: str | Path | None, slow: bool = False):
    """Transformers' "Loading weights" progress bars only for a slow load (``slow``, or
    safetensors in ``model_dir`` over 2 GiB) or with ``TTS_SELECTOR_VERBOSE=1`` (the CLI's
    ``--verbose``); a sub-second load of a small model prints nothing."""
    from transformers.utils import logging as hf_logging

    if not slow and model_dir is not None:
        slow = sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors")) > _SLOW_LOAD_BYTES
    show = slow or os.environ.get("TTS_SELECTOR_VERBOSE") == "1"
    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if show else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
