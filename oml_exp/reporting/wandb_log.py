"""Send a finished run's summary to Weights & Biases: config, stage metrics and timings, never keys.

Only key-free material is sent: the resolved config (which names files but holds no fingerprint) and the stage
summaries. The run is written offline unless logger.mode=online.
"""

from __future__ import annotations

from pathlib import Path


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


def log_run(logger_cfg, summary: dict, run_dir: Path) -> None:
    import wandb

    run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity, group=logger_cfg.group,
                     tags=list(logger_cfg.tags), mode=logger_cfg.mode, dir=str(run_dir),
                     config=summary["config"], name=run_dir.name, reinit="finish_previous")
    metrics = flatten({name: stage["summary"] for name, stage in summary["stages"].items()})
    metrics.update(flatten({name: stage["seconds"] for name, stage in summary["stages"].items()}, "seconds/"))
    run.summary.update(metrics)
    run.finish()
