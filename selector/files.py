"""Small file-system helpers shared by the modules that write durable files."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The sha256 (hex) of a file's bytes, read ``chunk_size`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(directory: str | Path) -> None:
    """Flush a directory entry (a rename is durable only once its directory is on disk).

    Not every platform lets a directory be opened (Windows); there the rename is the best we
    can do, so failures are ignored.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_regular(path: str | Path, *, error: type[Exception], what: str, fix: str = "give a regular file",
                 open_fix: str = "", shown: str | Path | None = None) -> tuple[int, os.stat_result]:
    """An open read-only descriptor of ``path`` and its ``fstat``, if it is a regular file.

    Opened without blocking (opening a FIFO for reading otherwise waits for a writer) and checked
    on the open descriptor, so nothing can be swapped in between the check and the read; a FIFO,
    device or directory raises ``error`` naming it and ``fix``; a file that cannot be opened
    raises ``error`` too (with ``open_fix`` appended when given). ``shown``: the path the message
    names (default ``path``). The caller closes the descriptor."""
    import stat

    shown = path if shown is None else shown
    tail = f": {open_fix}" if open_fix else ""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{shown}: no such file (the {what}){tail}") from None
    except OSError as exc:
        raise error(f"{shown}: cannot open the {what} ({exc.strerror or exc}){tail}") from None
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise error(f"{shown}: cannot read the {what} ({exc.strerror or exc}){tail}") from None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file")
        raise error(f"{shown}: the {what} is {kind}, not a regular file: {fix}")
    return fd, info


def read_regular_file(path: str | Path, *, max_bytes: int, root: str | Path | None = None,
                      error: type[Exception] | None = None, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing anything that could hang or exhaust memory.

    ``path`` must be a regular file (a FIFO would block the open or the read forever, a device
    such as ``/dev/zero`` never ends, a directory is not data) of at most ``max_bytes`` bytes.
    With ``root`` (e.g. a table directory) the path, links resolved, must also lie inside
    ``root``: a link out of a table is refused, not followed. ``error`` is the exception class
    raised (default :class:`~selector.errors.InputError`); its message names the path, what is
    wrong and the fix. A missing file raises ``error`` too.
    """
    from .errors import InputError

    error = error or InputError
    path = Path(path)
    target = path
    if root is not None:
        real, base = os.path.realpath(path), os.path.realpath(root)
        if os.path.commonpath([real, base]) != base:
            raise error(f"{path}: the {what} resolves to {real}, outside {root}: a table's files must lie inside it "
                        f"(replace the link with the file itself, or restore the table)")
        target = Path(real)
    fd, info = open_regular(target, error=error, what=what, shown=path,
                            fix="give a regular file" + (" (restore the table's own file)" if root is not None else ""))
    try:
        if info.st_size > max_bytes:
            raise error(f"{path}: the {what} is {info.st_size} bytes, over the {max_bytes}-byte limit: "
                        "this is not a file this tool wrote; restore the right file")
        chunks, size = [], 0
        while True:  # read at most max_bytes + 1: a file growing while read is still capped
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise error(f"{path}: the {what} is over the {max_bytes}-byte limit: restore the right file")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
