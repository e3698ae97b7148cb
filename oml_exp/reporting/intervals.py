"""Intervals that stay inside what a quantity can be: a success rate's never leaves [0, 1], a ratio's never drops
below 0. The plots, the persistence table and W&B draw them from here, so a figure and a table agree.

Success rates are counts over fingerprints: their interval is Wilson's, over every fingerprint of the seeds pooled.
Other quantities have no count behind them: the run's own paired bootstrap interval where the CSV holds one and
a single seed was run, else the seed mean ± sd, clipped to the quantity's bounds.
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

Z95 = 1.959963984540054
# Columns that are a fraction of the fingerprints a run checked.
RATES = ("success_rate", "heldout_success", "raw_success", "chat_success", "false_positive_rate", "token_accuracy")
# What each other quantity can be; a ratio (retention) has no upper bound.
BOUNDS = {"mean_retention": (0.0, math.inf), "drift_top1": (0.0, 1.0), "utility": (0.0, 1.0),
          "train_steps": (0.0, math.inf), "drift_kl": (0.0, math.inf)}


def wilson(rate: Optional[float], n: float) -> tuple[Optional[float], Optional[float]]:
    """The Wilson score 95% interval of a success rate over n trials. The closed form takes the fractional counts of
    a rate averaged over templates or seeds, which a binomial test would not."""
    if rate is None or pd.isna(rate) or not n:
        return None, None
    centre = (rate + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 / (1 + Z95 ** 2 / n) * math.sqrt(rate * (1 - rate) / n + Z95 ** 2 / (4 * n ** 2))
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def points(table: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Per condition (the `by` columns): the seed mean of `metric` with its interval (`lo`, `hi`) and the number of
    seeds; conditions that did not measure it are left out."""
    part = table.dropna(subset=[metric])
    if part.empty:
        return pd.DataFrame(columns=[*by, "mean", "lo", "hi", "seeds"])
    grouped = part.groupby(by, dropna=False, sort=False)
    out = grouped[metric].agg(mean="mean", sd="std").reset_index()
    out["seeds"] = grouped["seed"].nunique().to_numpy()
    if metric in RATES:
        trials = grouped["fingerprints"].sum().to_numpy()
        out["lo"], out["hi"] = zip(*(wilson(m, n) for m, n in zip(out["mean"], trials)))
    else:
        low, high = BOUNDS.get(metric, (-math.inf, math.inf))
        spread = out["sd"].fillna(0.0)
        out["lo"], out["hi"] = (out["mean"] - spread).clip(lower=low), (out["mean"] + spread).clip(upper=high)
        if {f"{metric}_lo", f"{metric}_hi"} <= set(part.columns):
            single = (out["seeds"] == 1).to_numpy()
            own = grouped[[f"{metric}_lo", f"{metric}_hi"]].first().to_numpy()
            out.loc[single, "lo"], out.loc[single, "hi"] = own[single, 0], own[single, 1]
    return out.drop(columns="sd")


def describe(metric: str) -> str:
    """What a metric's error bar is, for a figure's caption."""
    if metric in RATES:
        return "Wilson 95% over the fingerprints of all seeds"
    if metric == "mean_retention":
        return "paired bootstrap 95% (one seed) or ± sd over seeds"
    return "± sd over seeds"
