"""Argument checks and parameter counting shared by the transformers-based backends."""
from __future__ import annotations

from typing import Any

import torch

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
