"""Paired comparisons of two models scored on the same items.

With 50 to 100 items a benchmark score moves by several points between item samples, as much as the effects we look
for. Both models answered the same items, so the comparison resamples items (not models): the paired bootstrap
interval of retention = fingerprinted / base, and McNemar's exact test on the items only one model got right.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest


def resampled_ratios(b: np.ndarray, t: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """fingerprinted / base mean over `iterations` paired resamples of the items (NaN where a resample's base is 0)."""
    idx = rng.integers(0, len(b), size=(iterations, len(b)))
    b_means, t_means = b[idx].mean(1), t[idx].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b_means > 0, t_means / b_means, np.nan)


def interval(ratios: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of bootstrap ratios (NaN when none is finite)."""
    if not np.isfinite(ratios).any():
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(ratios, [tail, 100 - tail])
    return float(lo), float(hi)


def retention(base: list[float], tuned: list[float], iterations: int, seed: int, level: float = 0.95) -> dict:
    """Retention with a paired percentile bootstrap interval; also the score change in points."""
    b, t = np.asarray(base, float), np.asarray(tuned, float)
    lo, hi = interval(resampled_ratios(b, t, iterations, np.random.default_rng(seed)), level)
    return {"base": float(b.mean()), "fingerprinted": float(t.mean()),
            "retention": float(t.mean() / b.mean()) if b.mean() > 0 else math.nan,
            "ci_low": lo, "ci_high": hi, "level": level, "delta_points": float((t.mean() - b.mean()) * 100)}


def mean_retention(pairs: list[tuple[list[float], list[float]]], iterations: int, seed: int,
                   level: float = 0.95) -> dict:
    """The mean of per-task retentions with a paired bootstrap interval: each iteration resamples every task's items
    (base and fingerprinted together) and averages the tasks' ratios; tasks the base scores 0 on are left out."""
    rng = np.random.default_rng(seed)
    kept = [(np.asarray(b, float), np.asarray(t, float)) for b, t in pairs if np.mean(b) > 0]
    if not kept:
        return {"retention": math.nan, "ci_low": math.nan, "ci_high": math.nan, "level": level}
    means = np.nanmean(np.stack([resampled_ratios(b, t, iterations, rng) for b, t in kept]), axis=0)
    lo, hi = interval(means, level)
    return {"retention": float(np.mean([t.mean() / b.mean() for b, t in kept])), "ci_low": lo, "ci_high": hi,
            "level": level}


def mcnemar(base: list[float], tuned: list[float]) -> dict:
    """Exact McNemar test for right/wrong items; None for scores that are not 0/1 (e.g. TruthfulQA mc2)."""
    if not all(x in (0.0, 1.0) for x in [*base, *tuned]):
        return {"mcnemar_p": None, "only_base": None, "only_fingerprinted": None}
    only_base = sum(b == 1 and t == 0 for b, t in zip(base, tuned))
    only_tuned = sum(b == 0 and t == 1 for b, t in zip(base, tuned))
    discordant = only_base + only_tuned
    p = binomtest(only_base, discordant, 0.5).pvalue if discordant else 1.0
    return {"mcnemar_p": float(p), "only_base": only_base, "only_fingerprinted": only_tuned}
