"""The confidence model's domain probe, fitted by `kb build` and stored with the bundle.

A logistic model of the query vector that tells the articles' questions from the out-of-scope examples (the
``domain`` feature of kb.search.Calibration). Its inputs are fixed once a bundle is built, so the build fits it
(both backends) and writes its weights into the manifest; a serving worker only reads them and never imports
scikit-learn (~99 MB resident with scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DOMAIN_C = 1.0  # inverse regularisation of fit_domain_probe
MANIFEST_KEY = "domain_probe"

Probe = tuple[np.ndarray, float]


def fit_domain_probe(questions: np.ndarray, examples: np.ndarray) -> Probe | None:
    """(weights, bias) of a logistic model on query vectors: the articles' questions (1) against the
    out-of-scope examples (0), classes weighed equally; None with fewer than 10 examples (or questions)."""
    if len(examples) < 10 or len(questions) < 10:
        return None
    from sklearn.linear_model import LogisticRegression

    X = np.vstack([questions, examples]).astype(np.float64)
    y = np.r_[np.ones(len(questions)), np.zeros(len(examples))]
    lr = LogisticRegression(C=DOMAIN_C, class_weight="balanced", max_iter=2000).fit(X, y)
    return lr.coef_[0].astype(np.float32), float(lr.intercept_[0])


def split_questions(questions: Sequence[dict], vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(the articles' question vectors, the out-of-scope example vectors) of a bundle's question rows, in
    row order: rows with a group are articles' questions, rows without one are out-of-scope examples."""
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(questions), dim)
    is_q = np.array([q["group"] is not None for q in questions], dtype=bool)
    return vectors[is_q] if is_q.any() else np.zeros((0, dim), np.float32), \
        vectors[~is_q] if (~is_q).any() else np.zeros((0, dim), np.float32)


def probe_manifest_entry(questions: Sequence[dict], vectors: np.ndarray, dim: int) -> dict:
    """The manifest's ``domain_probe``: the fit over the bundle's questions, with the row counts it saw.
    ``weights``/``bias`` are null where fit_domain_probe returns None (too few examples). Float32 weights
    and the float bias round-trip through JSON (and Postgres jsonb) exactly."""
    q, oos = split_questions(questions, vectors, dim)
    probe = fit_domain_probe(q, oos)
    return {"questions": len(q), "examples": len(oos),
            "weights": None if probe is None else [float(x) for x in probe[0]],
            "bias": None if probe is None else probe[1]}


class ProbeError(Exception):
    """A stored probe that does not fit its bundle (the loader turns it into a BundleError)."""


def stored_probe(manifest: dict, questions: int, examples: int, dim: int) -> tuple[bool, Probe | None]:
    """(stored, probe) from a manifest: stored False for a bundle built before the build fitted the probe;
    else the probe, or None where the build found too few examples. Raises ProbeError where the entry does
    not match the bundle's question counts or dimension."""
    entry = manifest.get(MANIFEST_KEY)
    if entry is None:
        return False, None
    try:
        if (int(entry["questions"]), int(entry["examples"])) != (questions, examples):
            raise ProbeError(f"domain probe fitted on {entry['questions']} questions and {entry['examples']} "
                             f"out-of-scope examples, the bundle has {questions} and {examples}")
        if entry["weights"] is None:
            return True, None
        w = np.asarray(entry["weights"], dtype=np.float32)
        b = float(entry["bias"])
    except (KeyError, TypeError, ValueError) as e:
        raise ProbeError(f"unreadable domain probe ({type(e).__name__}: {e})") from None
    if w.shape != (dim,) or not np.isfinite(w).all() or not math.isfinite(b):
        raise ProbeError(f"domain probe has {w.size} weights (finite: {bool(np.isfinite(w).all())}), "
                         f"expected {dim} finite ones")
    return True, (w, b)
