"""A GGUF file's safetensors conversion, cached once per file.

``transformers`` de-quantizes a GGUF file slowly (15-40 s, mostly metadata parsing), and
engines such as vLLM cannot read GGUF at all; so the first load converts the file once to a
safetensors folder (config, weights, tokenizer) under ``cache_dir/gguf/<sha256 of the file>/``
(default ``$TTS_SELECTOR_CACHE`` or ``~/.cache/tts-selector``). The folder is written to a
temporary name and renamed into place with a marker, so an interrupted conversion is never
used; later loads read the folder (under a second). Weights are saved as safetensors only:
no pickle anywhere. The transformers policy loads from this cache, the vLLM policy and the
preset prompt format read it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..files import file_sha256, fsync_dir

log = logging.getLogger(__name__)

CACHE_ENV = "TTS_SELECTOR_CACHE"
CACHE_MARKER = "tts-selector-cache.json"
_CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$TTS_SELECTOR_CACHE`` if set, else ``~/.cache/tts-selector``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/tts-selector").expanduser()


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)


class GGUFCache:
    """The cached safetensors conversion of one GGUF file (see the module docstring).

    ``cache_dir``: the cache root (default :func:`default_cache_dir`); ``trust_remote_code`` is
    passed to ``from_pretrained`` as given. Nothing is read or converted until asked."""

    def __init__(self, gguf_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 trust_remote_code: bool = False):
        self.gguf_path = Path(gguf_path)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.trust_remote_code = trust_remote_code
        self._sha256: str | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The cache folder of this file (hashes the file once)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.gguf_path)
        return self.cache_dir / "gguf" / self._sha256

    def complete(self, folder: Path | None = None) -> bool:
        """Whether ``folder`` (default :attr:`path`) holds a finished conversion of this file."""
        folder = self.path if folder is None else folder
        marker = folder / CACHE_MARKER
        if not marker.is_file():
            return False
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            return False
        return meta.get("format") == _CACHE_FORMAT and meta.get("sha256") == self._sha256 and any(folder.glob("*.safetensors"))

    def convert(self) -> tuple[Any, Any]:
        """De-quantize the GGUF file (float32) and write its cache folder (a folder that cannot
        be written only costs speed next time: logged). Returns the model and its tokenizer."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        common = {"local_files_only": True, "trust_remote_code": self.trust_remote_code}
        folder, name = str(self.gguf_path.parent), self.gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, **common)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **common)
        _strip_quantizer(model)
        self._write(model, tokenizer, self.path)
        return model, tokenizer

    def ensure(self) -> Path:
        """The cache folder, converting the file once if needed (thread-safe). Raises if the
        folder cannot be written: engines that read it (vLLM) have no in-memory fallback."""
        if not self.complete():
            with self._lock:
                if not self.complete():
                    self.convert()
            if not self.complete():
                raise RuntimeError(
                    f"could not write the safetensors conversion of {str(self.gguf_path)!r} to {str(self.path)!r} "
                    f"(see the warning above); make that folder writable or set {CACHE_ENV} to a writable folder"
                )
        return self.path

    def config(self) -> Any:
        """The model's ``transformers`` config, from the cache when complete, else from the GGUF
        file's own metadata (without its quantization settings); reads no weights."""
        from transformers import AutoConfig

        common = {"local_files_only": True, "trust_remote_code": self.trust_remote_code}
        if self.complete():
            return AutoConfig.from_pretrained(str(self.path), **common)
        config = AutoConfig.from_pretrained(str(self.gguf_path.parent), gguf_file=self.gguf_path.name, **common)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        return config

    def _write(self, model: Any, tokenizer: Any, final: Path) -> None:
        """Save a safetensors copy in a temporary folder, then rename it into place."""
        tmp: Path | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name[:16]}.tmp-", dir=final.parent))
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            pickles = [p.name for p in tmp.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
            if pickles or not any(tmp.glob("*.safetensors")):
                raise RuntimeError(f"conversion wrote unexpected files {pickles} (no safetensors?)")
            (tmp / CACHE_MARKER).write_text(json.dumps({
                "format": _CACHE_FORMAT, "sha256": self._sha256, "source": self.gguf_path.name,
                "transformers": _transformers_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }, indent=1))
            _fsync_tree(tmp)
            if final.exists() and not self.complete(final):
                # Not written by this protocol (renames are atomic): move it aside, then drop it.
                stale = final.with_name(f".{final.name[:16]}.stale-{os.getpid()}-{time.time_ns()}")
                os.rename(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, final)
                tmp = None
            except OSError:
                # Someone else finished the same conversion first; theirs is as good.
                if not self.complete(final):
                    raise
        except Exception as exc:  # a cache we cannot write only costs speed next time
            log.warning("could not cache the GGUF conversion at %s: %s", final, exc)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def _strip_quantizer(model: Any) -> None:
    """A GGUF model is already de-quantized; drop the quantizer so it saves as plain weights."""
    for attr, value in (("hf_quantizer", None), ("is_quantized", False), ("quantization_method", None)):
        if hasattr(model, attr):
            setattr(model, attr, value)
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def _transformers_version() -> str:
    try:
        import transformers

        return transformers.__version__
    except Exception:  # pragma: no cover
        return "unknown"
