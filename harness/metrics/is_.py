"""Inception Score from the 1008-way softmax of TF-Inception (no output bias), 10 splits,
exactly as the original TF code and NVlabs' metric code compute it."""
from __future__ import annotations

import numpy as np

from harness.errors import MetricError


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """probs: (N, K) class probabilities -> (mean, std) over `splits` equal parts of
    exp(E_x KL(p(y|x) || p(y)))."""
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    if n < splits:
        raise MetricError(f"Inception Score with {splits} splits needs at least {splits} samples, got {n}")
    scores = []
    for k in range(splits):
        part = probs[k * n // splits:(k + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
