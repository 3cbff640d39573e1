"""Config values are type-checked at load: a wrong type is a ConfigError naming the key, the
expected type and the value, whatever the value (a Hypothesis property)."""
from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selector.profiler import load_config
from selector.profiler.config import ConfigError

from test_profile import sim_config

KEYS = ["grid.budgets", "pool.n", "evaluate.seeds", "evaluate.subsamples", "dataset.heldout", "select.confidence",
        "binning.k", "binning.thresholds", "grid.strategies", "policy", "shard_size", "sampling", "seed", "dataset.size"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=6), st.lists(st.one_of(st.integers(-2, 9), st.text(max_size=3)), max_size=3),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_loads_or_fails_as_a_config_error_naming_the_key(tmp_path, key, value):
    path = sim_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    section, _, name = key.partition(".")
    if name:
        raw[section][name] = value
    else:
        raw[section] = value
    path.write_text(yaml.safe_dump(raw))
    try:
        load_config(path)
    except ConfigError as exc:
        assert (name or section) in str(exc)


def test_wrong_types_fail_at_load_with_key_type_and_value(tmp_path):
    for key, value, words in [("grid.budgets", "abc", ["grid.budgets", "list of integers", "'abc'"]),
                              ("pool.n", "16", ["pool.n", "an integer", "'16'"]),
                              ("evaluate.seeds", 5, ["evaluate.seeds", "list of integers", "5"]),
                              ("select.confidence", True, ["select.confidence", "a number", "True"])]:
        path = sim_config(tmp_path)
        raw = yaml.safe_load(path.read_text())
        section, _, name = key.partition(".")
        raw[section][name] = value
        path.write_text(yaml.safe_dump(raw))
        try:
            load_config(path)
        except ConfigError as exc:
            assert all(w in str(exc) for w in words), str(exc)
        else:
            raise AssertionError(f"{key}={value!r} loaded")
