"""The persistence report: for every run with attacks, one row per attacked model (success after the attack, with
its Wilson 95% interval, against the attack's strength, beside the run's own success before it and the attacked
model's utility), as persistence.csv, a Markdown section and persistence.png.

Like the sweep table it reads run summaries only (their headline's `attacks`), so no key can reach it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import pandas as pd

from oml_exp.reporting import plots
from oml_exp.reporting.intervals import wilson
from oml_exp.reporting.markdown import md_table
from oml_exp.reporting.plots import MARKERS, STYLES
from oml_exp.reporting.report import label
from oml_exp.reporting.table import find_runs

# Sideways offset between regularizers at one strength (in strength steps), so equal values stay visible.
DODGE = 0.08

CSV = "persistence.csv"
PNG = "persistence.png"
# How each strength measure reads on an axis, and whether a larger value is a stronger attack.
MEASURES = {"tokens": ("tokens trained on", True), "weight": ("fingerprinted model's weight in the merge", False),
            "bits": ("bits per weight", False), "fraction": ("fraction of weights zeroed", True)}


def rows(root: Path) -> pd.DataFrame:
    """One row per (run, attack) under `root`; empty when no run attacked its model."""
    out = []
    for path in find_runs(root):
        summary = json.loads(path.read_text())
        head, cfg = summary["headline"], summary["config"]
        for name, attack in (head.get("attacks") or {}).items():
            out.append({**_row(summary, head, cfg, name, attack, str(path.parent.relative_to(root))),
                        "model_hash": summary["stages"][f"attack/{name}"]["hash"]})
    # The same attacked model seen by two runs (a rerun) is one row.
    return pd.DataFrame(out).drop_duplicates("model_hash", keep="last") if out else pd.DataFrame()


def _row(summary: dict, head: dict, cfg: dict, name: str, attack: dict, run: str) -> dict:
    strength = attack["strength"]
    n = summary["fingerprints"]
    success = attack.get("success_rate")
    lo, hi = wilson(success, n)
    before = head.get("success_rate")
    return {
        "run": run, "regularizer": label(cfg["regularizer"]), "fingerprints": n, "seed": cfg["seed"],
        "attack": name, "panel": " ".join(filter(None, [attack["kind"], strength.get("method")])),
        "measure": strength["measure"], "strength": strength["value"], "lr": strength.get("lr"),
        "success_before": before, "success": success, "success_lo": lo, "success_hi": hi,
        "survival": success / before if success is not None and before else None,
        "heldout_success": attack.get("heldout_success_rate"),
        "mean_retention": (attack.get("mean") or {}).get("retention"),
        "drift_top1": (attack.get("drift") or {}).get("top1_agreement"),
        "weights_moved": (attack.get("weight_change") or {}).get("relative_l2"),
        "first_loss": attack.get("first_loss"), "final_loss": attack.get("final_loss"),
    }


def markdown(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return []
    lines = ["", "## Persistence: fingerprint success after each attack", "",
             "Success = exact recall of the plain key by the attacked model, [Wilson 95% interval]; before = the "
             "fingerprinted model's own; retention and drift of the attacked model against the base model.", ""]
    regs = list(table["regularizer"].drop_duplicates())
    header = ["attack", "kind", "strength", *(f"regularizer {r}" for r in regs)]
    body = []
    for (name, panel, measure, strength), part in table.groupby(["attack", "panel", "measure", "strength"],
                                                                sort=False):
        cells = [_cell(part[part["regularizer"] == reg]) for reg in regs]
        body.append([name, panel, f"{measure} {strength:g}", *cells])
    before = table.drop_duplicates("regularizer")
    body.append(["(none)", "fingerprinted model", "-",
                 *(f"{100 * r:.1f}%" for r in before.set_index("regularizer").loc[regs, "success_before"])])
    return lines + md_table(header, body)


def _cell(part: pd.DataFrame) -> str:
    if part.empty or pd.isna(part["success"].iloc[0]):
        return "n/a"
    r = part.iloc[0]
    text = f"{100 * r['success']:.1f}% [{100 * r['success_lo']:.0f}, {100 * r['success_hi']:.0f}]"
    extra = [f"ret. {r['mean_retention']:.3f}" if pd.notna(r["mean_retention"]) else None,
             f"top-1 {r['drift_top1']:.3f}" if pd.notna(r["drift_top1"]) else None]
    return text + "".join(f", {e}" for e in extra if e)


def plot(table: pd.DataFrame, out: Path) -> Optional[plt.Figure]:
    """Success after each kind of attack against its strength (stronger to the right), one line per regularizer
    (`none` first), with Wilson intervals; each line starts at the fingerprinted model's own success ("before")."""
    if table.empty or table["success"].isna().all():
        return None
    panels = list(dict.fromkeys(table["panel"]))
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    regs = sorted(dict.fromkeys(table["regularizer"]), key=lambda r: (r != "none", r))
    for ax, panel in zip(axes.flat, panels):
        part = table[table["panel"] == panel]
        measure = part["measure"].iloc[0]
        axis_label, rising = MEASURES.get(measure, (measure, True))
        strengths = sorted(part["strength"].unique(), reverse=not rising)
        for i, reg in enumerate(regs):
            runs = part[part["regularizer"] == reg].dropna(subset=["success"])
            if runs.empty:
                continue
            x, mean, lo, hi = _line(runs, strengths)
            ax.errorbar([v + (i - (len(regs) - 1) / 2) * DODGE for v in x], mean,
                        yerr=[[m - low for m, low in zip(mean, lo)], [high - m for m, high in zip(mean, hi)]],
                        capsize=3, color=f"C{i}", marker=MARKERS[i % len(MARKERS)], linestyle=STYLES[i % len(STYLES)],
                        label=f"regularizer {reg}")
        ax.set_xticks(range(len(strengths) + 1), ["before", *(f"{v:g}" for v in strengths)], fontsize=8)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(f"{axis_label} (stronger →)", fontsize=8)
        ax.set_ylim(-0.03, 1.03)  # a point at 0% stays clear of the axis
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("success (% of fingerprints)")
    counts = "/".join(map(str, sorted(table["fingerprints"].unique())))
    fig.suptitle(f"Fingerprints surviving attacks ({counts} fingerprints; error bars: Wilson 95% over the "
                 "fingerprints of all runs)", fontsize=10)
    plots.legend(fig, *axes.flat[0].get_legend_handles_labels())
    return plots.save(fig, out)


def _line(runs: pd.DataFrame, strengths: list) -> tuple:
    """x positions (0 before the attack, then each strength's place), success and its interval, the runs of a line
    (seeds, counts) pooled at each point."""
    before = runs.drop_duplicates("run")
    found = [(0, _pooled(before["success_before"], before["fingerprints"]))]
    found += [(1 + strengths.index(s), _pooled(at["success"], at["fingerprints"])) for s, at in runs.groupby("strength")]
    x, stats = zip(*sorted(found))
    return (x, *zip(*stats))


def _pooled(rates: pd.Series, counts: pd.Series) -> tuple[float, float, float]:
    """The success over several runs' fingerprints together, with its Wilson interval."""
    n = counts.sum()
    rate = (rates * counts).sum() / n
    return (rate, *wilson(rate, n))
