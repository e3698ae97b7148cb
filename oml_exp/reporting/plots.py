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


# (column, label) of the success rates on the capacity plot's first panel.
SUCCESS = [("success_rate", "plain key"), ("heldout_success", "held-out templates"),
           ("chat_success", "through the chat template")]


def plot_capacity(csv: Path, out: Path) -> Optional[plt.Figure]:
    """What a fingerprint count costs, one line per regularizer: success by framing, mean retention with its paired
    95% interval, drift and optimizer steps against the count. None unless the runs span several counts and carry the
    retention interval (utility measured)."""
    table = pd.read_csv(csv)
    needed = {"mean_retention_lo", "mean_retention_hi", "train_steps", "drift_top1"}
    if table["fingerprints"].nunique() < 2 or not needed <= set(table.columns):
        return None
    regularizers = sorted(table["regularizer"].unique(), key=lambda r: (r != "none", r))  # the baseline first
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for reg, style in zip(regularizers, ("-", "--", ":", "-.")):
        rows = table[table["regularizer"] == reg].sort_values("fingerprints")
        x = rows["fingerprints"]
        for (col, label), color in zip(SUCCESS, ("C0", "C1", "C2")):
            if col in rows and rows[col].notna().any():
                axes[0].plot(x, 100 * rows[col], style, marker="o", color=color, label=f"{label} ({reg})")
        err = [rows["mean_retention"] - rows["mean_retention_lo"], rows["mean_retention_hi"] - rows["mean_retention"]]
        axes[1].errorbar(x, rows["mean_retention"], yerr=err, fmt=style, marker="o", capsize=3, label=reg)
        axes[2].plot(x, rows["drift_top1"], style, marker="o", label=reg)
        axes[3].plot(x, rows["train_steps"], style, marker="o", label=reg)
    axes[1].axhline(1.0, color="grey", lw=0.8)
    titles = [("success (%)", (0, 105)), ("mean retention, 95% interval", None),
              ("top-1 agreement with base", (0, 1.02)), ("optimizer steps", None)]
    for ax, (label, limits) in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.set_xticks(sorted(table["fingerprints"].unique()))
        ax.set_xlabel("fingerprints")
        ax.set_ylabel(label)
        if limits:
            ax.set_ylim(*limits)
        ax.grid(alpha=0.3)
    axes[3].set_ylim(bottom=0)
    axes[0].legend(fontsize=7, loc="center right")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig
