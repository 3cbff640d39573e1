"""Small file-system helpers shared by the modules that write durable files."""
from __future__ import annotations

import os
from pathlib import Path


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
    import stat

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
    try:
        # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer
        # (the fstat below then refuses it); it changes nothing for a regular file.
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file (the {what})") from None
    except OSError as exc:
        raise error(f"{path}: cannot open the {what} ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode)
                    else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file")
            raise error(f"{path}: the {what} is {kind}, not a regular file: give a regular file"
                        + (" (restore the table's own file)" if root is not None else ""))
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
