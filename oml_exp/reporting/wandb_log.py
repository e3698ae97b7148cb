"""`logger=wandb`: finished run summaries and sweep reports sent to Weights & Biases, never keys.

Only key-free material is sent: a run's resolved config (which names files but holds no fingerprint), the numbers of
its stage summaries and headline, and its fine-tune's training curve, replayed from the finetune stage's log.jsonl
(per optimizer step: loss, learning rate, grad norm, recall), the one file of the store it reads; a sweep's trade-off
table and plots, drawn from the report's CSV. The runs are written offline unless logger.mode=online.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

# The finetune stage's per-step log: numbers only, and the only store file a logger reads.
TRAIN_LOG = "log.jsonl"


class WandbLogger:
    """Built from conf/logger/wandb.yaml over LoggerConfig's defaults; offers what NoLogger does (loggers.py)."""

    def __init__(self, name: str, project: str, mode: str, entity: Optional[str], group: Optional[str], tags) -> None:
        # `name` is the config option (logger=wandb); each W&B run is named by its setting instead (summary["name"]).
        self.project, self.mode, self.entity, self.group, self.tags = project, mode, entity, group, list(tags)

    def log_run(self, summary: dict, run_dir: Path, experiment: str) -> None:
        """The run's config (nested, as composed), its fine-tune's training curve as history, and as summary the
        numbers a sweep table has (success with its Wilson interval, retention per task with its interval, drift),
        each attack's, and the stage metrics and timings."""
        run = self._init(group(self.group), dir=str(run_dir), config=summary["config"], name=summary["name"],
                         id=run_id(run_dir, experiment))
        for step, row in training_curve(summary):
            run.log(row, step=step)
        run.summary.update(summary_metrics(summary))
        run.finish()

    def log_sweep(self, tradeoff: pd.DataFrame, runs: int, out: Path, sweep_dir: str, files: dict[str, Path]) -> None:
        """The sweep's trade-off as a W&B table (one row per condition: seed mean, spread and the plotted interval)
        with line plots of success and utility retention against the number of fingerprints, and the report's PNGs
        (the trade-off with its error bars), in one `report` run grouped with the sweep's runs."""
        import wandb

        run = self._init(group(self.group, sweep_dir), dir=str(out), job_type="report",
                         name=f"report {Path(sweep_dir).name}", config={"runs": runs}, id=run_id(out))
        table = wandb.Table(dataframe=tradeoff)
        logged = {"tradeoff": table}
        for metric, title in [("success_rate", "fingerprint success"), ("mean_retention", "utility retention")]:
            if f"{metric}_mean" in tradeoff.columns:
                logged[f"tradeoff/{metric}"] = wandb.plot.line(table, "fingerprints", f"{metric}_mean", stroke="series",
                                                              title=f"{title} vs fingerprints")
        logged.update({f"plots/{kind}": wandb.Image(str(path)) for kind, path in files.items()
                       if path.suffix == ".png"})
        run.log(logged)
        run.finish()

    def _init(self, group: Optional[str], **run):
        import wandb

        return wandb.init(project=self.project, entity=self.entity, group=group, tags=self.tags, mode=self.mode,
                          reinit="finish_previous", resume="allow", **run)


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested summaries as W&B's flat scalar keys ("check/success_rate"); an interval [low, high] as KEY_lo, KEY_hi."""
    flat = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten(value, key + "/"))
        elif _number(value):
            flat[key] = value
        elif isinstance(value, list) and len(value) == 2 and all(map(_number, value)):
            flat[f"{key}_lo"], flat[f"{key}_hi"] = value
    return flat


def group(named: Optional[str], sweep_dir: Optional[str] = None) -> Optional[str]:
    """logger.group, else the sweep's name for the jobs of a multirun (and its report), so a sweep's runs group."""
    if named is not None:
        return named
    if sweep_dir is None and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = HydraConfig.get().sweep.dir
    return None if sweep_dir is None else sweep_name(sweep_dir)


def sweep_name(folder: str) -> str:
    """A sweep file's name (its folder, outputs/sweeps/NAME), or a plain multirun's <date>/<time> folder."""
    path = Path(folder).resolve()
    return "/".join(path.parts[-2:]) if path.parent.parent.name == "multiruns" else path.name


def training_curve(summary: dict) -> list[tuple[int, dict]]:
    """(optimizer step, its numbers as train/...) from the finetune stage's log.jsonl; [] for a run without one."""
    folder = (summary["stages"].get("finetune") or {}).get("folder")
    log = Path(folder) / TRAIN_LOG if folder else None
    if log is None or not log.is_file():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [(row["step"], {f"train/{k}": v for k, v in row.items() if k != "step" and _number(v)}) for row in rows]


def summary_metrics(summary: dict) -> dict:
    """The run's numbers, flat: its headline (success and held-out success with their Wilson intervals, retention
    per task with its interval, drift, each attack's under attacks/NAME/) at the top, then the stage summaries'
    metrics and timings."""
    out = flatten(summary["headline"])
    out.update(flatten({name: stage["summary"] for name, stage in summary["stages"].items()}))
    out.update(flatten({name: stage["seconds"] for name, stage in summary["stages"].items()}, "seconds/"))
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def run_id(folder: Path, experiment: str = "") -> str:
    """One W&B run per folder and experiment: a job that runs again (a sweep rerun after a kill) resumes its run
    instead of adding one, while another experiment written into the same folder gets a run of its own."""
    return hashlib.sha1(f"{Path(folder).resolve()}|{experiment}".encode()).hexdigest()[:16]
