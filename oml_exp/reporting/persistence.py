"""The persistence report: for every run with attacks, one row per attacked model (success after the attack, with
its Wilson 95% interval, against the attack's strength, beside the run's own success before it and the attacked
model's utility), as persistence.csv, a Markdown section and persistence.png.

Like the sweep table it reads run summaries only (their headline's `attacks`), so no key can reach it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import binomtest  # noqa: E402

from oml_exp.reporting.markdown import md_table  # noqa: E402
from oml_exp.reporting.table import find_runs, label  # noqa: E402

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


def wilson(rate: Optional[float], n: int) -> tuple[Optional[float], Optional[float]]:
    """The Wilson score 95% interval of a success rate over n fingerprints (inside [0, 1] by construction)."""
    if rate is None or not n:
        return None, None
    ci = binomtest(round(rate * n), n).proportion_ci(confidence_level=0.95, method="wilson")
    return round(ci.low, 4), round(ci.high, 4)


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
    """Success after each kind of attack against its strength (stronger to the right), one line per regularizer,
    with Wilson intervals; the fingerprinted model's own success as a dotted line."""
    if table.empty or table["success"].isna().all():
        return None
    panels = list(dict.fromkeys(table["panel"]))
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    regs = list(dict.fromkeys(table["regularizer"]))
    colors = {reg: f"C{i}" for i, reg in enumerate(regs)}
    for ax, panel in zip(axes.flat, panels):
        part = table[table["panel"] == panel]
        measure = part["measure"].iloc[0]
        axis_label, rising = MEASURES.get(measure, (measure, True))
        for reg in regs:
            line = part[part["regularizer"] == reg].sort_values("strength", ascending=rising)
            if line.empty:
                continue
            x = [str(f"{v:g}") for v in line["strength"]]
            ax.errorbar(x, line["success"], yerr=[line["success"] - line["success_lo"],
                                                  line["success_hi"] - line["success"]],
                        marker="o", capsize=3, color=colors[reg], label=reg)
            ax.axhline(line["success_before"].iloc[0], color=colors[reg], linestyle=":", linewidth=1)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(f"{axis_label} (stronger →)", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("fingerprint success (exact)")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, title="regularizer", loc="upper right", fontsize=8)
    n = table["fingerprints"].iloc[0]
    fig.suptitle(f"Fingerprints surviving attacks ({n} fingerprints; Wilson 95% intervals; dotted: before the "
                 "attack)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


def write(table: pd.DataFrame, out: Path) -> dict[str, Path]:
    """persistence.csv and persistence.png of `table` (rows()), into `out`; {} when no run has attacks."""
    if table.empty:
        return {}
    files = {"persistence_csv": out / CSV}
    table.to_csv(files["persistence_csv"], index=False)
    if plot(table, out / PNG) is not None:
        files["persistence"] = out / PNG
    return files
