"""Every ```python block of README.md runs as written, so a snippet cannot reference an
undefined name or a moved function.

Each block runs in a fresh namespace with the working directory a scratch folder that links
the repository's ``tables/`` and ``configs/`` (what a block writes, e.g. ``runs/`` or
``heatmap.png``, lands there). Blocks that name real models would take minutes on the CPU or
need weights we do not have, so engines built from spec strings (``selector.api`` builds every
one) are swapped for simulator stand-ins carrying the real engines' ids and sizes, per
``STANDINS`` below: the table id checks, the catalog's size matching and every call still run
for real, only the text generation is simulated. ``arith-check`` and ``sim`` specs are built
as usual (they are cheap). The code of the blocks is not edited.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from selector import api
from selector.backends.simulated import SimulatedPolicy, SimulatedPRM

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Spec prefix -> the simulator stand-in: (kind, id, parameters). Ids are what the real engines
# report (the shipped CPU table records smollm2-135m's), so a table profiled with them matches.
STANDINS: dict[str, tuple[str, str, int]] = {
    "smollm2-135m": ("policy", "smollm2-135m-instruct-q4_1", 134_515_008),
    "hf:": ("policy", "", 1_543_714_304),  # id: the model directory's name, as TransformersPolicy
    "gguf:": ("policy", "", 134_515_008),
    "vllm:": ("policy", "", 1_543_714_304),
    "hf-prm:": ("prm", "", 7_000_000_000),
    "vllm-prm:": ("prm", "", 7_000_000_000),
}


def _standin(spec: str, real_factory):
    for prefix, (kind, engine_id, params) in STANDINS.items():
        if spec == prefix or (prefix.endswith(":") and spec.startswith(prefix)):
            if not engine_id:
                model = re.search(r"(?:model=)?([^,]+)", spec.partition(":")[2]).group(1)
                engine_id = Path(model).name
            if kind == "policy":
                return SimulatedPolicy(id=engine_id, num_parameters=params)
            return SimulatedPRM(id=engine_id)
    return real_factory(spec)


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of the README."""
    blocks, lines = [], README.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((start + 1, "\n".join(body)))
        i += 1
    return blocks


BLOCKS = python_blocks()


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    for name in ("tables", "configs"):
        (folder / name).symlink_to(ROOT / name)
    return folder


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs(line, code, scratch, monkeypatch):
    pytest.importorskip("matplotlib")  # the figure blocks
    make_policy, make_prm = api.make_policy, api.make_prm
    monkeypatch.setattr(api, "_ENGINES", {})
    monkeypatch.setattr(api, "make_policy", lambda spec: _standin(spec, make_policy))
    monkeypatch.setattr(api, "make_prm", lambda spec: _standin(spec, make_prm))
    monkeypatch.chdir(scratch)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - our own README
    assert os.getcwd() == str(scratch)
