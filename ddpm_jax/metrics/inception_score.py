"""Inception Score (Salimans et al. 2016), as in their reference code (openai/improved-gan).

    IS = exp( E_x KL(p(y|x) || p(y)) ),  p(y) = mean of p(y|x) over the split,

computed on `splits` consecutive, equal-size parts of the samples (no shuffling), reported as the mean and
standard deviation over the splits. The reference feeds the 1008 Inception logits *without* the softmax bias
(`pool3 @ W`); the Inception FeatureNetwork of this package returns exactly those as `logits` (torch-fidelity's
'logits_unbiased').
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["inception_score"]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = np.max(logits, axis=1, keepdims=True)
    z = logits - m
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def inception_score(logits: Any, splits: int = 10) -> tuple[float, float]:
    """Inception Score of class logits [N, K], in float64.

    Args:
      logits: [N, K] unnormalized log-probabilities p(y|x) (softmax is applied here). -inf entries are allowed
        (probability exactly 0); NaN and +inf are not.
      splits: number of consecutive parts; part i is logits[i*N//splits : (i+1)*N//splits], as the reference.

    Returns:
      (mean, std) over the splits of exp(mean_x KL(p(y|x) || p(y))). Uniform predictions give 1; confident
      predictions spread evenly over K classes give K.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must have shape [N, K], got {x.shape}.")
    if not isinstance(splits, (int, np.integer)) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}.")
    n = x.shape[0]
    if n < splits:
        raise ValueError(f"Need at least one sample per split: {n} samples for {splits} splits.")
    if np.any(np.isnan(x)) or np.any(x == np.inf):
        raise ValueError("logits contain NaN or +inf.")
    if np.any(np.all(x == -np.inf, axis=1)):
        raise ValueError("A row of logits is entirely -inf (no class has positive probability).")
    logp = _log_softmax(x)
    p = np.exp(logp)
    scores = []
    for i in range(splits):
        part_p = p[i * n // splits:(i + 1) * n // splits]
        part_logp = logp[i * n // splits:(i + 1) * n // splits]
        py = np.mean(part_p, axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            # 0 * log 0 = 0: terms with p(y|x) = 0 contribute nothing (and p(y) >= p(y|x) > 0 otherwise).
            kl = np.where(part_p > 0, part_p * (part_logp - np.log(py)), 0.0)
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))
