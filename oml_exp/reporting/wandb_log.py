"""Send a finished run's summary to Weights & Biases: config, stage metrics and timings, never keys.

Only key-free material is sent: the resolved config (which names files but holds no fingerprint) and the stage
summaries. The run is written offline unless logger.mode=online.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from oml_exp.reporting.report import experiment


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


def group(logger_cfg, sweep_dir: Optional[str] = None) -> Optional[str]:
    """logger.group, else the sweep folder for the jobs of a multirun (and its report), so a sweep's runs group."""
    if logger_cfg.group is not None:
        return logger_cfg.group
    if sweep_dir is None and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get().sweep.dir
    return sweep_dir


def run_id(folder: Path, experiment: str = "") -> str:
    """One W&B run per folder and experiment: a job that runs again (a sweep rerun after a kill) resumes its run
    instead of adding one, while another experiment written into the same folder gets a run of its own."""
    return hashlib.sha1(f"{Path(folder).resolve()}|{experiment}".encode()).hexdigest()[:16]


def log_run(logger_cfg, summary: dict, run_dir: Path) -> None:
    import wandb

    run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity, group=group(logger_cfg),
                     tags=list(logger_cfg.tags), mode=logger_cfg.mode, dir=str(run_dir),
                     config=summary["config"], name=run_dir.name, reinit="finish_previous",
                     id=run_id(run_dir, experiment(summary)), resume="allow")
    metrics = flatten({name: stage["summary"] for name, stage in summary["stages"].items()})
    metrics.update(flatten({name: stage["seconds"] for name, stage in summary["stages"].items()}, "seconds/"))
    run.summary.update(metrics)
    run.finish()


def log_tradeoff(logger_cfg, table, out: Path, sweep_dir: str, images: dict[str, Path]) -> None:
    """The sweep's trade-off as a W&B table (one row per condition, seed mean and spread) with line plots of success
    and utility retention against the number of fingerprints, and the report's PNGs. `table` is the report's CSV,
    whose columns hold no keys."""
    import wandb

    from oml_exp.reporting import aggregate

    stats = aggregate.seed_stats(table, aggregate.SUMMARY_METRICS)
    series = aggregate.series_columns(table)
    stats.insert(0, "series", [aggregate.series_label(table, tuple(r[c] for c in series)) for _, r in stats.iterrows()])
    run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity, group=group(logger_cfg, sweep_dir),
                     tags=list(logger_cfg.tags), mode=logger_cfg.mode, dir=str(out), job_type="report",
                     name=f"report {Path(sweep_dir).name}", config={"runs": len(table)}, reinit="finish_previous",
                     id=run_id(out), resume="allow")
    tradeoff = wandb.Table(dataframe=stats)
    logged = {"tradeoff": tradeoff}
    for metric, title in [("success_rate", "fingerprint success"), ("mean_retention", "utility retention")]:
        if f"{metric}_mean" in stats.columns:
            logged[f"tradeoff/{metric}"] = wandb.plot.line(tradeoff, "fingerprints", f"{metric}_mean", stroke="series",
                                                          title=f"{title} vs fingerprints")
    logged.update({f"plots/{kind}": wandb.Image(str(path)) for kind, path in images.items() if path.suffix == ".png"})
    run.log(logged)
    run.finish()
