"""A table directory is data: loading it never runs code and never chooses a network endpoint.

The acceptance test builds a hostile table (an estimator file that writes a file when it is
deserialised, its hash updated in the table's metadata; a manifest naming an OpenAI server on a
local listener) and checks that ``route`` refuses each with exit 2, that no file is written and
that the listener sees no connection.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from selector.backends.registry import remote_reason, require_local_spec
from selector.errors import InputError
from selector.estimators.train import train_on_table
from selector.profile import load_config, run_profile
from selector.tables import read_table, write_table

from test_profile import sim_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("untrusted")
    run_profile(load_config(sim_config(tmp, prompts=24)), tmp / "table", progress=False)
    train_on_table(tmp / "table", features="tfidf", folds=2)
    return tmp / "table"


# A class whose deserialisation writes a file (pickle, through __reduce__; also inside a numpy
# object array). It lives in its own module so the CLI's process could import it.
BOMB = textwrap.dedent('''
    import os

    class Bomb:
        def __init__(self, target):
            self.target = target

        def __reduce__(self):
            return (os.system, (f"touch {self.target}",))

        def __setstate__(self, state):
            open(state["target"], "w").write("ran")
''')


def _route(table_dir: Path, extra_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(extra_path)]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "selector.cli", "route", "What is 2 + 3?", "--tables", str(table_dir),
                           "--budget", "4", *args], capture_output=True, text=True, env=env, timeout=120)


def _record_estimator(table_dir: Path, file: str) -> None:
    """Point the table's prompt:tfidf entry at ``file`` with its true hash (what an attacker can do)."""
    path = table_dir / "selection.parquet"
    df, meta = read_table(path, "selection")
    entry = dict(meta["estimators"]["prompt:tfidf"], file=file,
                 sha256=hashlib.sha256((table_dir / file).read_bytes()).hexdigest())
    write_table(df, path, "selection", dict(meta, estimators=dict(meta["estimators"], **{"prompt:tfidf": entry})))


def test_a_hostile_table_neither_runs_code_nor_sends_prompts(table, tmp_path):
    (tmp_path / "bombmod.py").write_text(BOMB)
    sys.path.insert(0, str(tmp_path))
    try:
        import bombmod
    finally:
        sys.path.remove(str(tmp_path))
    target = tmp_path / "pwned"

    # 1. A pickled .joblib estimator, hash updated: refused unread, with the retrain command.
    pickled = tmp_path / "pickled"
    shutil.copytree(table, pickled)
    (pickled / "estimator-tfidf.joblib").write_bytes(pickle.dumps(bombmod.Bomb(str(target))))
    _record_estimator(pickled, "estimator-tfidf.joblib")
    r = _route(pickled, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "train-estimator" in r.stderr and "--features tfidf" in r.stderr
    assert not target.exists()

    # 2. An .npz estimator holding the bomb in an object array (a pickle), hash updated:
    #    refused by numpy.load(allow_pickle=False), nothing unpickled.
    hostile = tmp_path / "hostile"
    shutil.copytree(table, hostile)
    buf = io.BytesIO()
    np.savez(buf, header=np.asarray("{}"), classes=np.array([bombmod.Bomb(str(target))], dtype=object))
    (hostile / "estimator-tfidf.npz").write_bytes(buf.getvalue())
    _record_estimator(hostile, "estimator-tfidf.npz")
    r = _route(hostile, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "not a readable estimator" in r.stderr and "train-estimator" in r.stderr
    assert not target.exists()

    # 3. A manifest naming an OpenAI server (a local listener that counts connections).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    remote = tmp_path / "remote"
    shutil.copytree(table, remote)
    manifest_path = remote / "state" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["policy"] = f"openai:model=sim,base_urls=[http://127.0.0.1:{port}]"
    manifest_path.write_text(json.dumps(manifest))
    r = _route(remote, tmp_path)
    connections = 0
    try:
        while True:
            listener.accept()[0].close()
            connections += 1
    except BlockingIOError:
        pass
    listener.close()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "manifest.json" in r.stderr and "--policy" in r.stderr and "openai" in r.stderr
    assert connections == 0
    # The user may still name that engine; the table only chooses local ones.
    assert _route(remote, tmp_path, "--policy", "sim").returncode == 0

    # The bomb is live: loading it the unsafe way would have written the file.
    np.load(hostile / "estimator-tfidf.npz", allow_pickle=True)["classes"]
    assert target.exists()


@pytest.mark.parametrize("spec", [
    "openai:model=x,base_urls=[http://10.0.0.1:8000]", "vllm-prm:base_url=http://h:1,model=m,protocol=rlhflow",
    "hf:https://example.com/model", "vllm-prm:url=h,model=m,protocol=rlhflow",
])
def test_remote_specs_are_recognised(spec):
    assert remote_reason(spec) is not None
    with pytest.raises(InputError, match="must come from the user|name it yourself"):
        require_local_spec(spec, "policy", "manifest.json")


@pytest.mark.parametrize("spec", ["sim", "sim:noise=0.5", "smollm2-135m", "arith-check", "hf:/models/x",
                                  "vllm:preset=smollm2-135m", "vllm-prm:model=/m,protocol=rlhflow", "none"])
def test_local_specs_pass(spec):
    assert remote_reason(spec) is None and require_local_spec(spec, "policy", "manifest.json") == spec
