"""The sweep table: every finished run under a folder as one row, and the per-condition seed statistics.

`collect` reads the run summaries (summary.json in run folders) and copies named fields out of them into one row per
run, followed by every setting of the run's config (a dotted column each, "train.lr"), constant ones too, so the CSV
alone says how each run was made; nothing else is read, so no fingerprint key can reach the table, or the plots,
Markdown and W&B tables drawn from it. Settings that may hold a credential are left out (`public`).

Rows that used exactly the same stage outputs are one experiment seen twice (a rerun, or two folders of the same
sweep): only the newest is kept. A condition is one combination of the axes (model, strategy, regularizer,
augmentation, number of fingerprints, and any other config key swept within them); the runs of a condition differ
in their seed, and give the spread shown as mean ± standard deviation.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import pandas as pd
from tqdm import tqdm

from oml_exp.reporting.intervals import points
from oml_exp.reporting.report import experiment, false_positive_rate, framings, heldout_success, label

# Axes every run has; settings that take several values within one of their combinations (a swept learning rate, an
# averaging strength) join them (`conditions`).
AXES = ["model", "strategy", "regularizer", "augmentation", "fingerprints"]
# Settings that never make two runs different experiments.
NOT_AXES = ("fingerprints.seed", "paths.", "logger.")
# A setting whose name has one of these words may hold a credential (an API key, a token, a password) when its value
# is text; a number is a count (strategy.responses_per_key, eval.drift_tokens), and a word after it says what about
# keys the setting sets (fingerprints.key_length, strategy.key_strategy, strategy.keys_file, verify.api_key_env: the
# name of the variable that holds the key).
SECRET_WORDS = {"key", "keys", "token", "tokens", "secret", "secrets", "password", "passwd", "apikey", "credential",
                "credentials"}
ABOUT_KEYS = {"strategy", "file", "env", "length"}
# The per-condition summary: the Markdown trade-off table and the W&B one.
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


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def public(settings: dict) -> dict:
    """The settings without those that may hold a credential, and URLs without their user, password and query (where
    credentials ride: https://user:pass@host/v1, ?api_key=)."""
    return {name: _bare_url(value) for name, value in settings.items() if not secret(name, value)}


def secret(name: str, value) -> bool:
    words = re.split(r"[._]", name.lower())
    return isinstance(value, str) and any(w in SECRET_WORDS and (i + 1 == len(words) or words[i + 1] not in ABOUT_KEYS)
                                          for i, w in enumerate(words))


def _bare_url(value):
    if not isinstance(value, str) or "://" not in value:
        return value
    parts = urlsplit(value)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="").geturl()


def row(summary: dict, run: str) -> dict:
    cfg = summary["config"]
    head = summary["headline"]
    check = _stage(summary, "check")
    out = {"run": run, "model": cfg["model"]["name"], "strategy": summary["strategy"],
           "regularizer": label(cfg["regularizer"]), "augmentation": label(cfg["augmentation"]),
           "fingerprints": summary["fingerprints"], "seed": cfg["seed"],
           "success_rate": head.get("success_rate"), "token_accuracy": head.get("token_accuracy"),
           "heldout_success": heldout_success(check), "false_positive_rate": false_positive_rate(check),
           "raw_success": framings(check).get("raw/plain"), "chat_success": framings(check).get("chat/plain"),
           "train_steps": head.get("train_steps"), "train_seconds": _stage(summary, "finetune").get("seconds")}
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


def collect(root: Path) -> pd.DataFrame:
    """One row per distinct finished run under `root`: its measurements, then every setting of its config."""
    root = Path(root)
    rows, settings, times = [], [], []
    for path in tqdm(find_runs(root), desc="report: reading runs", unit="run"):
        summary = json.loads(path.read_text())
        rows.append(row(summary, str(path.parent.relative_to(root))))
        settings.append(public(flatten(summary["config"])))
        times.append(path.stat().st_mtime)
    if not rows:
        raise FileNotFoundError(f"no run summaries (summary.json with a headline) under {root}")
    measured, settings = pd.DataFrame(rows), pd.DataFrame(settings)
    table = pd.concat([measured, settings[[c for c in settings.columns if c not in measured.columns]]], axis=1)
    table["_time"] = times
    table = table.sort_values("_time").drop_duplicates("stage_hashes", keep="last").drop(columns="_time")
    # Measurements no run made (no evaluate stage, no chat check) go; a setting stays even where it is null.
    table = table.drop(columns=[c for c in measured.columns if table[c].isna().all()])
    return table.sort_values([*conditions(table), "seed", "run"]).reset_index(drop=True)


def conditions(table: pd.DataFrame) -> list[str]:
    """The columns that define an experimental condition: the fixed axes, and the settings (dotted columns) that take
    several values within one combination of them."""
    settings = [c for c in table.columns if "." in c and not c.startswith(NOT_AXES)]
    within = table.groupby(AXES, dropna=False)[settings].nunique(dropna=False).max() if settings else {}
    return AXES + [c for c in settings if within[c] > 1]


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


def system_prompt_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The guide's robustness table: per model (and other varying condition), augmentation off/on, held-out success
    and utility, averaged over seeds."""
    stats = seed_stats(table, ["heldout_success", "utility", "mean_retention"]).dropna(subset=["heldout_success_mean"])
    order = [c for c in conditions(table) if c != "augmentation"] + ["augmentation"]
    return stats.sort_values(order, key=lambda col: col.ne("none") if col.name == "augmentation" else col)


def tradeoff(table: pd.DataFrame) -> pd.DataFrame:
    """One row per condition: the seed mean and spread of the summary metrics with the interval the plots draw
    (`_lo`, `_hi`), led by the series label the plots give the condition."""
    stats = seed_stats(table, SUMMARY_METRICS)
    keys = conditions(table)
    for metric in [m for m in SUMMARY_METRICS if m in table.columns]:
        bounds = points(table, metric, keys)[[*keys, "lo", "hi"]]
        stats = stats.merge(bounds.rename(columns={"lo": f"{metric}_lo", "hi": f"{metric}_hi"}), on=keys, how="left")
    series = series_columns(table)
    stats.insert(0, "series", [series_label(table, tuple(r[c] for c in series)) for _, r in stats.iterrows()])
    return stats
