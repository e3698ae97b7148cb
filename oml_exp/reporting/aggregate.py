"""The report over many runs: every finished run under a folder in one table, its plots, and the W&B trade-off.

`collect` reads the run summaries (summary.json in run folders) and copies named fields out of them into one row per
run; nothing else is read, so no key can reach the table, the plots or W&B. The CSV is the single source of the
other outputs: the Markdown tables and the PNG plots are drawn from the CSV as written, so what a plot shows is what
the CSV says.

Rows that used exactly the same stage outputs are one experiment seen twice (a rerun, or two folders of the same
sweep): only the newest is kept. A condition is one combination of the axes (model, strategy, regularizer,
augmentation, number of fingerprints, and any other config key swept within them); the runs of a condition differ
in their seed, and give the spread shown as mean ± standard deviation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only: sweeps run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from oml_exp.reporting.report import experiment  # noqa: E402
from oml_exp.store import write_text  # noqa: E402

CSV = "runs.csv"
MARKDOWN = "report.md"
TRADEOFF_PNG = "tradeoff.png"
SYSTEM_PROMPTS_PNG = "system_prompts.png"

# Axes every run has; config keys that take several values within one of their combinations (a swept learning rate,
# an averaging strength) join them as dotted columns ("train.lr").
AXES = ["model", "strategy", "regularizer", "augmentation", "fingerprints"]
# Config keys that never make two runs different experiments.
NOT_AXES = ("seed", "fingerprints.seed", "paths.", "logger.", "force", "device")
# (column, title) of the quantities plotted against the number of fingerprints, when a run has them.
PANELS = [("success_rate", "fingerprint success, plain key"), ("heldout_success", "success, held-out templates"),
          ("mean_retention", "utility retention (fingerprinted / base)"), ("drift_top1", "top-1 agreement with base")]
SUMMARY_METRICS = ["success_rate", "heldout_success", "false_positive_rate", "utility", "mean_retention",
                   "drift_top1", "drift_kl"]


def find_runs(root: Path) -> list[Path]:
    """Run summaries under `root`: summary.json files with a headline and the run's config (stage folders' do not)."""
    found = []
    for path in sorted(Path(root).rglob("summary.json")):
        summary = json.loads(path.read_text())
        if isinstance(summary, dict) and {"headline", "config", "stages"} <= summary.keys():
            found.append(path)
    return found


def label(section: dict) -> str:
    """A config group's choice by name; a list of choices (each in its own package) joined by + ("averaging+lora")."""
    if "name" in section:
        return str(section["name"])
    return "+".join(label(part) for part in section.values() if isinstance(part, dict)) or "none"


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def row(summary: dict, run: str) -> dict:
    cfg = summary["config"]
    head = summary["headline"]
    check = _stage(summary, "check")
    out = {"run": run, "model": cfg["model"]["name"], "strategy": summary["strategy"],
           "regularizer": label(cfg["regularizer"]), "augmentation": label(cfg["augmentation"]),
           "fingerprints": summary["fingerprints"], "seed": cfg["seed"],
           "success_rate": head.get("success_rate"), "token_accuracy": head.get("token_accuracy"),
           "heldout_success": heldout_success(check), "false_positive_rate": false_positive_rate(check),
           "train_steps": head.get("train_steps"), "train_seconds": _stage(summary, "finetune").get("seconds"),
           **{f"{mode}_success": (check.get("sets") or {}).get(f"{mode}/plain", {}).get("mean") for mode in ("raw", "chat")}}
    tasks = head.get("tasks") or {}
    for task, t in tasks.items():
        # The evaluate stage names the fingerprinted score and the interval `fingerprinted`, `ci_low`, `ci_high`;
        # the run headline may carry them as `model` and `retention_ci`.
        lo, hi = t.get("retention_ci") or (t.get("ci_low"), t.get("ci_high"))
        out.update({f"score_{task}": t.get("fingerprinted", t.get("model")), f"base_{task}": t.get("base"),
                    f"retention_{task}": t.get("retention"), f"retention_{task}_lo": lo, f"retention_{task}_hi": hi})
    # A task the base model scores 0 on has no retention (NaN): the mean is over the tasks that have one.
    out["utility"] = _mean(out[f"score_{task}"] for task in tasks)
    out["mean_retention"] = _mean(out[f"retention_{task}"] for task in tasks)
    out["mean_retention_lo"], out["mean_retention_hi"] = (head.get("mean") or {}).get("retention_ci") or (None, None)
    drift = head.get("drift") or {}
    out["drift_top1"], out["drift_kl"] = drift.get("top1_agreement"), drift.get("kl")
    out["stage_hashes"] = experiment(summary)
    return out


def _stage(summary: dict, name: str) -> dict:
    """A stage's own summary as the run recorded it ({} when the run did not include the stage)."""
    return (summary["stages"].get(name) or {}).get("summary") or {}


def _mean(values) -> Optional[float]:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None


def heldout_success(check: dict) -> Optional[float]:
    """Mean success over the held-out templates, in the chat mode the fingerprints were trained in."""
    mode = "chat" if check.get("chat_template") else "raw"
    return ((check.get("sets") or {}).get(f"{mode}/heldout") or {}).get("mean")


def false_positive_rate(check: dict) -> Optional[float]:
    return ((check.get("false_positives") or {}).get("base") or {}).get("success_rate")


def collect(root: Path) -> pd.DataFrame:
    """One row per distinct finished run under `root`, with the config keys that vary between runs as extra axes."""
    root = Path(root)
    rows, configs, times = [], [], []
    for path in tqdm(find_runs(root), desc="report: reading runs", unit="run"):
        summary = json.loads(path.read_text())
        rows.append(row(summary, str(path.parent.relative_to(root))))
        configs.append(flatten(summary["config"]))
        times.append(path.stat().st_mtime)
    if not rows:
        raise FileNotFoundError(f"no run summaries (summary.json with a headline) under {root}")
    table = pd.DataFrame(rows)
    configs = pd.DataFrame(configs)
    keyed = pd.concat([table[AXES], configs[[c for c in configs.columns if not c.startswith(NOT_AXES)]]], axis=1)
    within = keyed.groupby(AXES, dropna=False).nunique(dropna=False).max()
    table = pd.concat([table, configs[list(within[within > 1].index)]], axis=1)
    table["_time"] = times
    table = table.sort_values("_time").drop_duplicates("stage_hashes", keep="last").drop(columns="_time")
    table = table.dropna(axis=1, how="all")
    return table.sort_values([*conditions(table), "seed", "run"]).reset_index(drop=True)


def conditions(table: pd.DataFrame) -> list[str]:
    """The columns that define an experimental condition: the fixed axes and any varying config key (dotted)."""
    return AXES + [c for c in table.columns if "." in c]


def varying(table: pd.DataFrame) -> list[str]:
    return [c for c in conditions(table) if table[c].nunique(dropna=False) > 1]


def series_columns(table: pd.DataFrame) -> list[str]:
    """The condition columns that tell plotted lines apart: those that vary, besides the x axis."""
    return [c for c in varying(table) if c != "fingerprints"]


def has_system_prompt_axis(table: pd.DataFrame) -> bool:
    """Runs with and without prompt augmentation, measured on the held-out templates: the guide's robustness table."""
    return "heldout_success" in table.columns and table["augmentation"].nunique() > 1


def series_label(table: pd.DataFrame, values) -> str:
    cols = series_columns(table)
    if not cols:
        return str(table["strategy"].iloc[0])
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(str(v) if c in AXES else f"{c}={v}" for c, v in zip(cols, values))


def seed_stats(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, standard deviation (0 for one seed) and seed count of `metrics` per condition."""
    present = [m for m in metrics if m in table.columns]
    grouped = table.groupby(conditions(table), dropna=False, sort=True)
    stats = grouped["seed"].nunique().rename("seeds").to_frame()
    for m in present:
        stats[f"{m}_mean"] = grouped[m].mean()
        stats[f"{m}_std"] = grouped[m].std().fillna(0.0)  # one seed: no spread
    return stats.reset_index()


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
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return fig


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


def system_prompt_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The guide's robustness table: per model (and other varying condition), augmentation off/on, held-out success
    and utility, averaged over seeds."""
    stats = seed_stats(table, ["heldout_success", "utility", "mean_retention"]).dropna(subset=["heldout_success_mean"])
    order = [c for c in conditions(table) if c != "augmentation"] + ["augmentation"]
    return stats.sort_values(order, key=lambda col: col.ne("none") if col.name == "augmentation" else col)


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
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return fig


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
    per_run = [c for c in ["run", *axes, "seed", "success_rate", "heldout_success", "utility", "mean_retention",
                           "drift_top1", "train_steps"] if c in table.columns]
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


def run(root: Path, out: Optional[Path] = None, logger=None) -> dict[str, Path]:
    """Write the CSV, the Markdown report and the plots for the runs under `root` into `out` (default root/report);
    log the trade-off to W&B when `logger.name` is wandb. Returns the written files by kind."""
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = collect(root)
    files = {"csv": out / CSV, "markdown": out / MARKDOWN}
    table.to_csv(files["csv"], index=False)
    write_text(files["markdown"], markdown(files["csv"], f"Sweep report: {root.resolve().name}"))
    for kind, name, plot in [("tradeoff", TRADEOFF_PNG, plot_tradeoff),
                             ("system_prompts", SYSTEM_PROMPTS_PNG, plot_system_prompts)]:
        fig = plot(files["csv"], out / name)
        if fig is not None:
            plt.close(fig)
            files[kind] = out / name
    if logger is not None and logger.name == "wandb":
        from oml_exp.reporting.wandb_log import log_tradeoff

        log_tradeoff(logger, pd.read_csv(files["csv"]), out, str(root), files)
    print(f"report: {len(table)} runs under {root} -> {out}")
    return files
