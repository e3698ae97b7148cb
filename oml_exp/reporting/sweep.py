"""The sweep report: every finished run under a folder in one CSV, with the Markdown and plots drawn from it, handed
to the logger (W&B's trade-off table) when one is configured."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import pandas as pd

from oml_exp.reporting import markdown, persistence, plots, table
from oml_exp.reporting.loggers import NoLogger
from oml_exp.store import write_text

log = logging.getLogger(__name__)

CSV = "runs.csv"
MARKDOWN = "report.md"
TRADEOFF_PNG = "tradeoff.png"
SYSTEM_PROMPTS_PNG = "system_prompts.png"
CAPACITY_PNG = "capacity.png"


def run(root: Path, out: Optional[Path] = None, logger=NoLogger()) -> dict[str, Path]:
    """Write the CSV, the Markdown report and the plots for the runs under `root` into `out` (default root/report)
    and hand them to `logger` (built from the logger config). Returns the written files by kind."""
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs = table.collect(root)
    files = {"csv": out / CSV, "markdown": out / MARKDOWN}
    runs.to_csv(files["csv"], index=False)
    attacked = persistence.rows(root)
    write_text(files["markdown"], markdown.markdown(files["csv"], f"Sweep report: {root.resolve().name}")
               + "\n".join(persistence.markdown(attacked)) + ("\n" if not attacked.empty else ""))
    files.update(persistence.write(attacked, out))
    for kind, name, plot in [("tradeoff", TRADEOFF_PNG, plots.plot_tradeoff),
                             ("system_prompts", SYSTEM_PROMPTS_PNG, plots.plot_system_prompts),
                             ("capacity", CAPACITY_PNG, plots.plot_capacity)]:
        if plot(files["csv"], out / name) is not None:
            files[kind] = out / name
    written = pd.read_csv(files["csv"])  # the logger too gets what the CSV says, as the plots and the Markdown do
    logger.log_sweep(table.tradeoff(written), len(written), out, str(root), files)
    log.info("report: %d runs under %s -> %s", len(runs), root, out)
    return files
