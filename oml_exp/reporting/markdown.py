"""The sweep report's Markdown, drawn from its CSV as written: the trade-off, the system-prompt table, each run's
retention per task, and every run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from oml_exp.reporting.table import (SUMMARY_METRICS, conditions, has_system_prompt_axis, seed_stats,
                                     system_prompt_rows, varying)


def _fmt(mean, std=None, pct: bool = False) -> str:
    """A cell: the mean, with ± sd when seeds disagree; success-like rates in percent."""
    if mean is None or pd.isna(mean):
        return "n/a"
    if pct:
        mean, std = 100 * mean, None if std is None else 100 * std
    text = f"{mean:.1f}%" if pct else f"{mean:.3f}"
    if std is None or pd.isna(std) or std == 0:
        return text
    return f"{text} ± {std:.1f}" if pct else f"{text} ± {std:.3f}"


def md_table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def markdown(csv: Path, title: str) -> str:
    table = pd.read_csv(csv)
    axes = conditions(table)
    stats = seed_stats(table, SUMMARY_METRICS)
    present = [m for m in SUMMARY_METRICS if f"{m}_mean" in stats.columns]
    lines = [f"# {title}", "", f"{len(table)} runs, {len(stats)} conditions; cells are mean ± sd over seeds "
             "(success and false positives in %, utility = mean task score, retention = fingerprinted / base score "
             "on the same items, drift = top-1 agreement and KL with the base model).", "", "## Trade-off", ""]
    lines += md_table(axes + ["seeds"] + present,
                      [[r[c] for c in axes] + [r["seeds"]] +
                       [_fmt(r[f"{m}_mean"], r[f"{m}_std"], pct=m.endswith(("success", "rate"))) for m in present]
                       for _, r in stats.iterrows()])
    if has_system_prompt_axis(table):
        prompts = system_prompt_rows(table)
        others = [c for c in varying(table) if c not in ("model", "augmentation")]
        lines += ["", "## System prompts (success on held-out templates)", ""]
        lines += md_table(["Model Configuration", *others, "Prompt Aug", "Fingerprint Accuracy", "Utility", "Retention",
                           "seeds"],
                          [[r["model"], *(r[c] for c in others), "❌" if r["augmentation"] == "none" else "✅",
                            _fmt(r["heldout_success_mean"], r["heldout_success_std"], pct=True),
                            _fmt(r["utility_mean"], r["utility_std"]),
                            _fmt(r["mean_retention_mean"], r["mean_retention_std"]), r["seeds"]]
                           for _, r in prompts.iterrows()])
    lines += retention_table(table)
    per_run = [c for c in ["run", *axes, "seed", "success_rate", "heldout_success", "chat_success", "utility",
                           "mean_retention", "mean_retention_lo", "mean_retention_hi", "drift_top1", "drift_kl",
                           "train_steps", "train_seconds"] if c in table.columns]
    lines += ["", "## Runs", ""]
    lines += md_table(per_run, [[_fmt(r[c]) if isinstance(r[c], float) and c not in axes else r[c] for c in per_run]
                                for _, r in table.iterrows()])
    return "\n".join(lines) + "\n"


def retention_table(table: pd.DataFrame) -> list[str]:
    """Per run and task: fingerprinted / base score on the same items, with its paired bootstrap 95% interval."""
    tasks = [c[len("retention_"):] for c in table.columns
             if c.startswith("retention_") and not c.endswith(("_lo", "_hi"))]
    if not tasks:
        return []
    keys = varying(table) + ["seed"]

    def cell(r, task: str) -> str:
        lo, hi = r.get(f"retention_{task}_lo"), r.get(f"retention_{task}_hi")
        return _fmt(r[f"retention_{task}"]) + (f" [{lo:.2f}, {hi:.2f}]" if pd.notna(lo) else "")

    return ["", "## Utility retention per task (paired bootstrap 95% interval)", "",
            *md_table(keys + tasks, [[r[c] for c in keys] + [cell(r, t) for t in tasks] for _, r in table.iterrows()])]
