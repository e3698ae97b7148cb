"""`logger=wandb`: finished run summaries and sweep reports sent to Weights & Biases, never keys.

Only key-free material is sent: a run's resolved config (which names files but holds no fingerprint) and its stage
summaries; a sweep's trade-off table and plots, drawn from the report's CSV. The runs are written offline unless
logger.mode=online.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


class WandbLogger:
    """Built from conf/logger/wandb.yaml over LoggerConfig's defaults; offers what NoLogger does (loggers.py)."""

    def __init__(self, name: str, project: str, mode: str, entity: Optional[str], group: Optional[str], tags) -> None:
        # `name` is the config option (logger=wandb); each W&B run is named after its folder instead.
        self.project, self.mode, self.entity, self.group, self.tags = project, mode, entity, group, list(tags)

    def log_run(self, summary: dict, run_dir: Path, experiment: str) -> None:
        """The run's config, stage metrics and timings (the stage summaries' numbers)."""
        run = self._init(group(self.group), dir=str(run_dir), config=summary["config"], name=run_dir.name,
                         id=run_id(run_dir, experiment))
        metrics = flatten({name: stage["summary"] for name, stage in summary["stages"].items()})
        metrics.update(flatten({name: stage["seconds"] for name, stage in summary["stages"].items()}, "seconds/"))
        run.summary.update(metrics)
        run.finish()

    def log_sweep(self, tradeoff: pd.DataFrame, runs: int, out: Path, sweep_dir: str, files: dict[str, Path]) -> None:
        """The sweep's trade-off as a W&B table (one row per condition, seed mean and spread) with line plots of
        success and utility retention against the number of fingerprints, and the report's PNGs, in one `report`
        run grouped with the sweep's runs."""
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
    """Nested summaries as W&B's flat scalar keys ("check/success_rate")."""
    flat = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten(value, key + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = value
    return flat


def group(named: Optional[str], sweep_dir: Optional[str] = None) -> Optional[str]:
    """logger.group, else the sweep folder for the jobs of a multirun (and its report), so a sweep's runs group."""
    if named is not None:
        return named
    if sweep_dir is None and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get().sweep.dir
    return sweep_dir


def run_id(folder: Path, experiment: str = "") -> str:
    """One W&B run per folder and experiment: a job that runs again (a sweep rerun after a kill) resumes its run
    instead of adding one, while another experiment written into the same folder gets a run of its own."""
    return hashlib.sha1(f"{Path(folder).resolve()}|{experiment}".encode()).hexdigest()[:16]
