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
