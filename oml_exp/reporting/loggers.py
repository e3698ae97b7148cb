"""What a logger offers the run and the sweep report; `logger=none` picks NoLogger, `logger=wandb` the W&B one
(oml_exp/reporting/wandb_log.py). Each is built from the logger config by hydra.utils.instantiate (its `_target_`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class NoLogger:
    """Logs nothing: the run's summary and the sweep report stay in their folders."""

    def __init__(self, **settings) -> None:
        """Takes the logger config's keys (project, mode, ...), which only a real logger uses."""

    def log_run(self, summary: dict, run_dir: Path, experiment: str) -> None:
        """A finished run: its key-free summary, its folder, and its experiment id (report.experiment)."""

    def log_sweep(self, tradeoff: pd.DataFrame, runs: int, out: Path, sweep_dir: str, files: dict[str, Path]) -> None:
        """A finished sweep report: the per-condition trade-off table (table.tradeoff) over `runs` runs, the report
        folder `out` and its written files (CSV, Markdown, PNGs)."""
