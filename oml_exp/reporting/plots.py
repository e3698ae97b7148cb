"""The sweep report's plots, drawn from its CSV as written: what a plot shows is what the CSV says.

Every figure reads the same way: a unit on each axis, bars from zero, intervals that stay inside what the quantity can
be (intervals.py), one legend below the panels with the `none` baseline first, series set a little apart on the x
axis with their own marker and line style so that none hides another, and a PDF beside each PNG for papers.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only: sweeps run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from oml_exp.reporting.intervals import describe, points  # noqa: E402
from oml_exp.reporting.table import (conditions, has_system_prompt_axis, series_columns, series_label,  # noqa: E402
                                     varying)

# (column, title) of the quantities plotted against the number of fingerprints, when a run has them.
PANELS = [("success_rate", "fingerprint success, plain key"), ("heldout_success", "success, held-out templates"),
          ("mean_retention", "utility retention"), ("drift_top1", "top-1 agreement with the base model")]
# Each quantity's y axis: its label with the unit, and whether it is a fraction drawn in percent.
AXIS = {"success_rate": ("success (% of fingerprints)", True),
        "heldout_success": ("success (% of fingerprints)", True),
        "mean_retention": ("retention (fingerprinted / base score)", False),
        "drift_top1": ("top-1 agreement (% of tokens)", True),
        "utility": ("mean task score (% correct)", True),
        "train_steps": ("optimizer steps", False)}
# (column, label) of the success rates on the capacity plot's first panel.
SUCCESS = [("success_rate", "plain key"), ("heldout_success", "held-out templates"),
           ("chat_success", "through the chat template")]
SERIES = "series"  # the column of the series label a condition is drawn under
MARKERS = "osD^vP*X"
STYLES = ["-", "--", ":", "-."]
DODGE = 0.03  # the share of a count axis between neighbouring series: identical values stay visible side by side
COUNT_LABEL = "fingerprints (count, log scale)"


def plot_tradeoff(csv: Path, out: Path) -> Optional[plt.Figure]:
    """Each present panel metric against the number of fingerprints, one line per series; with one fingerprint count
    (a regularizer comparison), one bar per series instead. None when the runs measured none of them."""
    table = pd.read_csv(csv)
    panels = [(m, title) for m, title in PANELS if _measured(table, m)]
    if not panels:
        return None
    table, names = _series(table)
    bars = table["fingerprints"].nunique() == 1 and len(names) > 1
    fig, axes = _panels(len(panels))
    for ax, (metric, title) in zip(axes, panels):
        found = _points(table, metric)
        if bars:
            _bars(ax, found, names)
        else:
            _lines(ax, found, names)
            _count_axis(ax, table)
        _value_axis(ax, metric)
        ax.set_title(title, fontsize=10)
    at = f"{table['fingerprints'].iloc[0]} fingerprints; " if bars else ""
    _title(fig, f"{len(table)} runs; {at}{_caption([m for m, _ in panels])}")
    if not bars:  # bars name their series on the x axis
        legend(fig, *_handles(axes))
    return save(fig, out)


def plot_system_prompts(csv: Path, out: Path) -> Optional[plt.Figure]:
    """Held-out-template success and utility with augmentation off and on, side by side per condition."""
    table = pd.read_csv(csv)
    if not has_system_prompt_axis(table):
        return None
    others = [c for c in varying(table) if c != "augmentation"]
    everyone = ", ".join(sorted(map(str, table["model"].unique())))  # the label when nothing but augmentation varies
    table = table.assign(**{SERIES: [", ".join(map(str, r)) or everyone
                                     for r in table[others].itertuples(index=False)]})
    groups = list(dict.fromkeys(table.sort_values(others)[SERIES])) if others else [everyone]
    augmentations = sorted(table["augmentation"].unique(), key=_baseline_first)
    width = 0.8 / len(augmentations)
    fig, axes = _panels(2)
    for ax, metric, title in zip(axes, ["heldout_success", "utility"], ["fingerprint success, held-out templates",
                                                                       "utility (mean task score)"]):
        found = _points(table, metric)
        for i, aug in enumerate(augmentations):
            part = found[found["augmentation"] == aug].set_index(SERIES).reindex(groups)
            ax.bar([g + (i - (len(augmentations) - 1) / 2) * width for g in range(len(groups))], part["mean"], width,
                   yerr=_yerr(part), capsize=3, color=f"C{i}", label=f"augmentation {aug}")
        ax.set_xticks(range(len(groups)), groups, fontsize=8, rotation=20, ha="right")
        ax.set_xlabel("condition")
        _value_axis(ax, metric)
        ax.set_title(title, fontsize=10)
    _title(fig, _caption(["heldout_success", "utility"]))
    legend(fig, *_handles(axes))
    return save(fig, out)


def plot_capacity(csv: Path, out: Path) -> Optional[plt.Figure]:
    """What a fingerprint count costs, one line style per series (regularizer): success by framing (one marker per
    framing), mean retention with its paired 95% interval, drift and optimizer steps against the count. None unless
    the runs span several counts and carry the retention interval (utility measured)."""
    table = pd.read_csv(csv)
    needed = {"mean_retention_lo", "mean_retention_hi", "train_steps", "drift_top1"}
    if table["fingerprints"].nunique() < 2 or not needed <= set(table.columns):
        return None
    table, names = _series(table)
    framings = [(col, label) for col, label in SUCCESS if _measured(table, col)]
    fig, axes = _panels(4)
    for (col, _), marker in zip(framings, MARKERS):
        _lines(axes[0], _points(table, col), names, marker=marker)
    for ax, metric in zip(axes[1:], ["mean_retention", "drift_top1", "train_steps"]):
        _lines(ax, _points(table, metric), names, marker="o")
    for ax, metric, title in zip(axes, ["success_rate", "mean_retention", "drift_top1", "train_steps"],
                                 ["fingerprint success by framing", "utility retention",
                                  "top-1 agreement with the base model", "training cost"]):
        _count_axis(ax, table)
        _value_axis(ax, metric)
        ax.set_title(title, fontsize=10)
    _title(fig, _caption(["success_rate", "mean_retention", "drift_top1"]))
    lines = [Line2D([], [], color=f"C{i}", linestyle=STYLES[i % len(STYLES)]) for i in range(len(names))]
    marks = [Line2D([], [], color="grey", marker=m, linestyle="none") for (_, _), m in zip(framings, MARKERS)]
    legend(fig, lines + marks, names + [label for _, label in framings])
    return save(fig, out)


def _measured(table: pd.DataFrame, metric: str) -> bool:
    return metric in table.columns and table[metric].notna().any()


def _series(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table with each row's series label, and the labels in drawing order: the `none` baseline first."""
    cols = series_columns(table)
    keys = list(table[cols].itertuples(index=False, name=None)) if cols else [()] * len(table)
    # A copy first: the wide CSV (every setting a column) reads into a fragmented frame that assign would warn about.
    labelled = table.copy().assign(**{SERIES: [series_label(table, k) for k in keys]})
    ordered = sorted(set(keys), key=lambda k: tuple(_baseline_first(v) for v in k))
    return labelled, list(dict.fromkeys(series_label(table, k) for k in ordered))


def _baseline_first(value) -> tuple:
    """A sort key: `none` before anything, then numbers, then names (one column never compares a number to a name)."""
    number = isinstance(value, (int, float))
    return value != "none", not number, value if number else str(value)


def _points(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return points(table, metric, by=[*conditions(table), SERIES])


def _panels(n: int) -> tuple[plt.Figure, list]:
    """n panels in a row, four as a square: never an empty panel."""
    cols = n if n <= 3 else 2
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    return fig, list(axes.flat)


def _yerr(part: pd.DataFrame) -> list:
    """Error bar lengths below and above each mean (none where the interval is unknown)."""
    below, above = part["mean"] - part["lo"], part["hi"] - part["mean"]
    return [below.fillna(0.0).clip(lower=0), above.fillna(0.0).clip(lower=0)]


def _lines(ax, found: pd.DataFrame, names: list[str], marker: Optional[str] = None) -> None:
    """One line per series against the count, each nudged sideways so equal values stay visible; a `marker` given
    tells apart something else (a framing) instead of the series."""
    counts = found["fingerprints"]
    step = DODGE * max(1.0, math.log2(counts.max() / counts.min())) if not found.empty else 0.0
    for i, name in enumerate(names):
        line = found[found[SERIES] == name].sort_values("fingerprints")
        if line.empty:
            continue
        x = line["fingerprints"] * 2 ** (step * (i - (len(names) - 1) / 2))
        ax.errorbar(x, line["mean"], yerr=_yerr(line), capsize=3, color=f"C{i}", linestyle=STYLES[i % len(STYLES)],
                    marker=marker or MARKERS[i % len(MARKERS)], markersize=5, label=name)


def _bars(ax, found: pd.DataFrame, names: list[str]) -> None:
    part = found.set_index(SERIES).reindex(names)
    ax.bar(range(len(names)), part["mean"], yerr=_yerr(part), capsize=3, color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=25, ha="right")
    ax.set_xlabel(" / ".join(series_columns(found)) or "setting")


def _count_axis(ax, table: pd.DataFrame) -> None:
    ax.set_xscale("log", base=2)
    counts = sorted(table["fingerprints"].unique())
    ax.set_xticks(counts)
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlim(counts[0] / 2 ** 0.4, counts[-1] * 2 ** 0.4)  # room for the nudged series at both ends
    ax.set_xlabel(COUNT_LABEL)


def _value_axis(ax, metric: str) -> None:
    """The y label with its unit; fractions in percent and never past 0-100%; bars from zero; retention against 1."""
    label, percent = AXIS[metric]
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    bottom, top = ax.get_ylim()
    if percent:
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
        bottom, top = max(bottom, 0.0), min(top, 1.03)
    if metric in ("success_rate", "heldout_success"):  # the whole range: the intervals are wide at these counts
        bottom, top = -0.03, 1.03  # a point at 0% stays clear of the axis
    if ax.patches:
        bottom = 0.0
    ax.set_ylim(bottom, top)
    if metric == "mean_retention":
        ax.axhline(1.0, color="grey", linewidth=0.8, zorder=0)


def _caption(metrics: list[str]) -> str:
    """What the error bars are, one clause per kind of interval the figure shows."""
    kinds: dict[str, list[str]] = {}
    for metric in metrics:
        kinds.setdefault(describe(metric), []).append(AXIS[metric][0].split(" (")[0])
    return "error bars: " + "; ".join(f"{', '.join(dict.fromkeys(names))}: {kind}" for kind, names in kinds.items())


def _title(fig: plt.Figure, text: str) -> None:
    """The caption above the panels, wrapped to the figure's width."""
    fig.suptitle(textwrap.fill(text, int(fig.get_figwidth() * 15)), fontsize=9)


def _handles(axes) -> tuple[list, list[str]]:
    """Every labelled artist of the panels once, in drawing order."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
    return list(seen.values()), list(seen)


def legend(fig: plt.Figure, handles: list, names: list[str]) -> None:
    """The figure's one legend, below the panels where it covers no line."""
    if names:
        fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(names)),
                   fontsize=8, frameon=False)


def save(fig: plt.Figure, out: Path) -> plt.Figure:
    """Write the PNG and a PDF beside it, and close the figure (a report draws several; tests still read it)."""
    fig.tight_layout()
    fig.savefig(out, dpi=150, bbox_inches="tight")
    fig.savefig(out.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return fig

