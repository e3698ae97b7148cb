"""The sweep report's plots, drawn from its CSV as written: what a plot shows is what the CSV says."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only: sweeps run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import pandas as pd  # noqa: E402

from oml_exp.reporting.table import (has_system_prompt_axis, seed_stats, series_columns, series_label,  # noqa: E402
                                     system_prompt_rows, varying)

# (column, title) of the quantities plotted against the number of fingerprints, when a run has them.
PANELS = [("success_rate", "fingerprint success, plain key"), ("heldout_success", "success, held-out templates"),
          ("mean_retention", "utility retention (fingerprinted / base)"), ("drift_top1", "top-1 agreement with base")]


def plot_tradeoff(csv: Path, out: Path) -> Optional[plt.Figure]:
    """Each present panel metric against the number of fingerprints: one line per series, seed spread as error bars;
    with one fingerprint count (a regularizer comparison), one bar per series instead.
    None when the runs measured none of them (e.g. generation only)."""
    table = pd.read_csv(csv)
    panels = [(m, title) for m, title in PANELS if m in table.columns and table[m].notna().any()]
    if not panels:
        return None
    stats = seed_stats(table, [m for m, _ in panels])
    series = series_columns(table)
    groups = list(stats.groupby(series, dropna=False, sort=True)) if series else [((), stats)]
    bars = stats["fingerprints"].nunique() == 1 and len(groups) > 1
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (metric, title) in zip(axes.flat, panels):
        (_bar_panel if bars else _line_panel)(ax, table, groups, metric)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    if not bars:
        axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    seeds = sorted({stats["seeds"].min(), stats["seeds"].max()})
    at = f"{stats['fingerprints'].iloc[0]} fingerprints; " if bars else ""
    fig.suptitle(f"{len(table)} runs; {at}mean ± sd over {'-'.join(map(str, seeds))} seed(s) per point", fontsize=10)
    return _save(fig, out)


def _line_panel(ax, table: pd.DataFrame, groups: list, metric: str) -> None:
    for values, part in groups:
        part = part.dropna(subset=[f"{metric}_mean"]).sort_values("fingerprints")
        if not part.empty:
            ax.errorbar(part["fingerprints"], part[f"{metric}_mean"], yerr=part[f"{metric}_std"], marker="o",
                        capsize=3, label=series_label(table, values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(table["fingerprints"].unique()))
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("fingerprints")


def _bar_panel(ax, table: pd.DataFrame, groups: list, metric: str) -> None:
    names = [series_label(table, values) for values, _ in groups]
    for i, ((_, part), name) in enumerate(zip(groups, names)):
        ax.bar(i, part[f"{metric}_mean"].iloc[0], yerr=part[f"{metric}_std"].iloc[0], capsize=3, label=name)
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=25, ha="right")
    low = min(p.get_height() for p in ax.patches if not math.isnan(p.get_height()))
    if low > 0.5:  # rates near 1 differ in their last points: start the axis near the lowest bar
        ax.set_ylim(max(0.0, low - 0.1), None)


def plot_system_prompts(csv: Path, out: Path) -> Optional[plt.Figure]:
    """Held-out-template success and utility with augmentation off and on, side by side per condition."""
    table = pd.read_csv(csv)
    if not has_system_prompt_axis(table):
        return None
    stats = system_prompt_rows(table)
    others = [c for c in varying(table) if c != "augmentation"]
    groups = list(stats.groupby(others, dropna=False, sort=True)) if others else [((), stats)]
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 1.6 * len(groups)), 4.2))
    width = 0.8 / max(1, stats["augmentation"].nunique())
    for i, aug in enumerate(sorted(stats["augmentation"].unique())):
        for ax, metric in zip(axes, ["heldout_success", "utility"]):
            heights = [part.loc[part["augmentation"] == aug, f"{metric}_mean"].mean() for _, part in groups]
            spread = [part.loc[part["augmentation"] == aug, f"{metric}_std"].mean() for _, part in groups]
            ax.bar([g + i * width for g in range(len(groups))], heights, width, yerr=spread, capsize=3,
                   label=f"augmentation {aug}")
    everyone = ", ".join(sorted(map(str, table["model"].unique())))  # the label when nothing but augmentation varies
    names = [", ".join(map(str, k if isinstance(k, tuple) else (k,))) or everyone for k, _ in groups]
    for ax, title in zip(axes, ["fingerprint success, held-out templates", "utility (mean task score)"]):
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], names, fontsize=8, rotation=20, ha="right")
        ax.set_title(title, fontsize=10)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> plt.Figure:
    """Write the PNG and close the figure (a sweep report draws several; tests still read the closed figure)."""
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fig
