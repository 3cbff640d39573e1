"""Worker functions for testing selector.grader_pool without sympy (a fake workload)."""
from __future__ import annotations

import os
import time


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _die(code: int) -> None:
    os._exit(code)


def _fail(message: str) -> None:
    raise ValueError(message)


WORKER_OPS = {"sleep": _sleep, "die": _die, "fail": _fail, "pid": lambda: os.getpid()}
