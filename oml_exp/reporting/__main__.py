"""`oml-exp-report DIR` (or `python -m oml_exp.reporting DIR`): the sweep report over any folder of finished runs, or
a committed report (runs.csv without its runs) redrawn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from oml_exp.config import ConfigError, LoggerConfig
from oml_exp.reporting import sweep

# The W&B logger's option file, as `logger=wandb` picks it for a run or a sweep.
WANDB = Path(__file__).resolve().parents[2] / "conf" / "logger" / "wandb.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="oml-exp-report", description="Gather the finished runs under DIR into one "
                                     "table (CSV, Markdown) with plots, and optionally the W&B trade-off.")
    parser.add_argument("dir", type=Path, help="a sweep folder, any folder holding run folders (summary.json), or a "
                        "report folder holding runs.csv (and persistence.csv) without the runs: redrawn from the CSVs")
    parser.add_argument("--out", type=Path, help="where the CSV, Markdown and figures go (default DIR/report; "
                        "DIR itself for a report folder)")
    parser.add_argument("--wandb", choices=["offline", "online"], help="also log the trade-off table and plots to W&B")
    parser.add_argument("--project", default=LoggerConfig.project)
    parser.add_argument("--entity")
    parser.add_argument("--group", help="W&B group (default: DIR, as a sweep's own runs are grouped)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the report's lines, as oml-exp shows them
    try:
        settings = {**OmegaConf.load(WANDB), "mode": args.wandb, "project": args.project, "entity": args.entity,
                    "group": args.group} if args.wandb else {}  # no --wandb: LoggerConfig's NoLogger
        sweep.run(args.dir, args.out, instantiate(LoggerConfig(**settings)))
    except (ConfigError, FileNotFoundError) as err:
        parser.exit(1, f"oml-exp-report: error: {err}\n")


if __name__ == "__main__":
    main()
