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

from selector.backends.registry import package_spec_reason, remote_reason, require_local_spec, require_package_spec
from selector.errors import InputError
from selector.tables import read_table, write_table


ROOT = Path(__file__).resolve().parents[1]


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


def test_a_hostile_table_neither_runs_code_nor_sends_prompts(sim_table, tmp_path):
    table = sim_table
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


# ----------------------------------------------------------------------------- round two: a table chooses no code
# Four tables that made the package import the table's own Python (a local model folder with
# ``auto_map`` and ``modeling_*.py``, loaded with trust_remote_code), each built here from a
# copy of the shipped demo table. Each must exit 2 naming what it refused, and leave no marker.

DEMO = ROOT / "tables" / "smollm2-135m__arith-check__arithmetic"


def _model_with_code(folder: Path, marker: Path) -> None:
    """A model folder whose config maps its classes to Python files in it (what
    trust_remote_code imports); importing either writes ``marker``."""
    folder.mkdir(parents=True)
    code = (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
            "from transformers import PretrainedConfig\n\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    (folder / "configuration_evil.py").write_text(code)
    (folder / "modeling_evil.py").write_text(code)
    (folder / "model.safetensors").write_bytes(b"x")  # the loaders look for weights before reading the config
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["EvilModel"], "model_type": "evil",
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel",
                     "AutoModelForCausalLM": "modeling_evil.EvilModel",
                     "AutoModelForTokenClassification": "modeling_evil.EvilModel"}}))


def _preset_with_code(table: Path, marker: Path) -> Path:
    """A policy preset inside the table that loads the table's model with trust_remote_code."""
    _model_with_code(table / "model", marker)
    (table / "preset.yaml").write_text(f"backend: transformers\nid: evil\nmodel: {table / 'model'}\n"
                                       "trust_remote_code: true\n")
    return table / "preset.yaml"


def _hidden_estimator(path: Path, policy: str) -> None:
    """A complete hidden-state estimator whose header names ``policy`` (routing it runs that policy)."""
    with np.load(DEMO / "estimator-tfidf.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith("tfidf_")}
    width, rows = 4 + len(arrays["stats_mean"]), arrays["clf_coef"].shape[0]
    arrays.update(hidden_mean=np.zeros(4), hidden_scale=np.ones(4), hidden_var=np.ones(4), hidden_seen=np.asarray(8),
                  ridge_coef=np.zeros(width), clf_coef=np.zeros((rows, width)))
    header = json.loads(str(arrays["header"]))
    arrays["header"] = np.asarray(json.dumps(dict(header, features="hidden", policy=policy)))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "selector.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _set_manifest(table: Path, **config) -> None:
    path = table / "state" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"].update(config)
    path.write_text(json.dumps(manifest))


def test_a_table_never_turns_on_trust_remote_code_nor_names_a_model(tmp_path):
    marker = tmp_path / "MARKER"
    tables = {name: tmp_path / name / "t" for name in ("prm", "preset", "hidden", "outside")}
    for t in tables.values():
        shutil.copytree(DEMO, t)
    # 1. The manifest names a PRM in the table's own folder, with trust_remote_code.
    _model_with_code(tables["prm"] / "prm", marker)
    _set_manifest(tables["prm"], prm=f"hf-prm:model={tables['prm'] / 'prm'},protocol=qwen25-math-prm,trust_remote_code=true")
    # 2. The manifest names a preset file inside the table (a model path and trust_remote_code).
    _set_manifest(tables["preset"], policy=str(_preset_with_code(tables["preset"], marker)))
    # 3. The prompt:tfidf record points (sha256 updated) to a file whose header says hidden
    #    features, computed by that preset: plain `route` would run the table's code.
    _hidden_estimator(tables["hidden"] / "estimator-evil.npz", str(_preset_with_code(tables["hidden"], marker)))
    _record_estimator(tables["hidden"], "estimator-evil.npz")
    # 4. The record points outside the table (to a file of the right kind and hash).
    _hidden_estimator(tables["outside"].parent / "outside.npz", "smollm2-135m")
    _record_estimator(tables["outside"], "../outside.npz")

    runs = {
        "prm": [("solve", "What is 2 + 3?", "--tables", str(tables["prm"]), "--budget", "4"),
                ("serve", "--tables", str(tables["prm"]), "--port", "0")],
        "preset": [("solve", "What is 2 + 3?", "--tables", str(tables["preset"]), "--budget", "4"),
                   ("serve", "--tables", str(tables["preset"]), "--port", "0")],
        "hidden": [("route", "What is 2 + 3?", "--tables", str(tables["hidden"]), "--budget", "4"),
                   ("evaluate", "--tables", str(tables["hidden"]), "--out", str(tmp_path / "e.json"))],
        "outside": [("route", "What is 2 + 3?", "--tables", str(tables["outside"]), "--budget", "4"),
                    ("evaluate", "--tables", str(tables["outside"]), "--out", str(tmp_path / "e.json"))],
    }
    words = {"prm": ["manifest.json", "trust_remote_code", "--prm"], "preset": ["manifest.json", "preset.yaml", "--policy"],
             "hidden": ["estimator-evil.npz", "features 'hidden'", "prompt:tfidf"],
             "outside": ["../outside.npz", "outside the table"]}
    for name, commands in runs.items():
        for argv in commands:
            r = _cli(*argv)
            assert r.returncode == 2 and "Traceback" not in r.stderr, (name, argv[0], r.stderr[-2000:])
            assert all(w in r.stderr for w in words[name]), (name, argv[0], r.stderr[-1000:])
            assert not marker.exists(), (name, argv[0])
    # The refusal is about who chooses: with the PRM named by the user, the same table routes.
    r = _cli("route", "What is 2 + 3?", "--tables", str(tables["prm"]), "--budget", "4", "--prm", "arith-check")
    assert r.returncode == 0 and "bin" in r.stdout and not marker.exists(), r.stderr[-1000:]


@pytest.mark.parametrize("spec,kind", [
    ("hf:/models/x", "policy"), ("gguf:/m/x.gguf", "policy"), ("/t/preset.yaml", "policy"), ("preset.yml", "policy"),
    ("vllm:model=/m", "policy"), ("vllm:preset=smollm2-135m,trust_remote_code=true", "policy"),
    ("vllm:preset=/t/p.yaml", "policy"), ("sim:latency=1000", "policy"), ("hf-prm:model=/m,protocol=rlhflow", "PRM"),
    ("vllm-prm:model=/m,protocol=rlhflow", "PRM"), ("arith-check:x=[1,2,3,4,5]", "PRM"),
])
def test_a_table_may_name_only_the_packages_own_engines(spec, kind):
    assert package_spec_reason(spec, "policy" if kind == "policy" else "prm") is not None
    with pytest.raises(InputError, match="package's own engines"):
        require_package_spec(spec, kind, "manifest.json")


@pytest.mark.parametrize("spec,kind", [("smollm2-135m", "policy"), ("sim", "policy"), ("sim:latency=0.05", "policy"),
                                       ("vllm:preset=smollm2-135m", "policy"), ("arith-check", "PRM"), ("none", "PRM"),
                                       ("sim:separation=2.0,noise=1.0,bias=1.0", "PRM")])
def test_the_packages_own_engines_pass(spec, kind):
    assert require_package_spec(spec, kind, "manifest.json") == spec
