"""Thread settings: the count's precedence, and the wait policy set before torch loads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from selector import threads
from selector.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def test_thread_count_precedence(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads() == threads.available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert threads.choose_threads() == 5
    monkeypatch.setenv(threads.ENV_VAR, "2")
    assert threads.choose_threads() == 2
    assert threads.choose_threads(3) == 3
    monkeypatch.setenv(threads.ENV_VAR, "many")
    with pytest.raises(InputError, match="TTS_SELECTOR_THREADS must be a positive number"):
        threads.choose_threads()
    with pytest.raises(InputError, match="--threads"):
        threads.choose_threads(0)


def _torch_settings(env: dict[str, str]) -> str:
    code = ("import os, selector.backends.hf_common, torch; "
            "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())")
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", threads.ENV_VAR)}
    out = subprocess.run([sys.executable, "-c", code], env=dict(clean, **env), cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_backends_set_a_passive_wait_and_the_thread_count_before_torch_loads():
    pytest.importorskip("torch")
    assert _torch_settings({}) == f"PASSIVE {threads.available_cores()}"
    # The user's own settings win.
    assert _torch_settings({"OMP_WAIT_POLICY": "ACTIVE", threads.ENV_VAR: "1"}) == "ACTIVE 1"
