from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data sets beside the project (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the project expects ../shared/data beside it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The interpreter of vLLM's environment (scripts/install_vllm_cpu.sh builds .venv-vllm/);
    skips, with the reason, when none imports vllm. Checked on first use rather than at
    collection: importing vllm takes seconds, which every test run would pay."""
    from selector.backends.vllm_launch import find_vllm_python, vllm_unavailable_reason

    python = find_vllm_python()
    reason = vllm_unavailable_reason(python)
    if reason is not None:
        pytest.skip(f"vLLM integration skipped: {reason}")
    return python


@pytest.fixture(scope="session")
def sim_table(tmp_path_factory) -> Path:
    """A simulator table (``test_profile.sim_config``, 40 prompts) with a trained tfidf
    estimator, profiled once per session for every test that routes on one. Read-only: a
    test that changes a table copies it first."""
    from selector.estimators.train import train_on_table
    from selector.profiler import load_config, run_profile
    from test_profile import sim_config

    tmp = tmp_path_factory.mktemp("sim-table")
    run_profile(load_config(sim_config(tmp, prompts=40)), tmp / "table", progress=False)
    train_on_table(tmp / "table", features="tfidf", folds=3)
    return tmp / "table"
