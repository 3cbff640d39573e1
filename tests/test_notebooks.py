"""The notebooks run from a clean kernel against the shipped tables, and are committed without outputs."""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {"inspect_tables.ipynb": 10, "compare_tables.ipynb": 2}  # name -> figures it must show at least
CELL_TIMEOUT_S = 180


def test_the_notebooks_are_there():
    assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} == set(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"


@pytest.mark.slow  # a Jupyter kernel per notebook
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_executes_from_a_clean_kernel(name, monkeypatch):
    path = ROOT / "notebooks" / name
    # The kernel is a fresh process: point it at this checkout's sources, whatever is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})  # cwd = notebooks/, as in Jupyter
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the traceback) on any failing cell
    seconds = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= NOTEBOOKS[name], f"{name}: {len(figures)} figures shown, expected >= {NOTEBOOKS[name]}"
    print(f"{name}: executed in {seconds:.1f} s, {len(figures)} figures")
