"""The sweep report: every finished run under a folder in one CSV, with the Markdown and plots drawn from it, handed
to the logger (W&B's trade-off table) when one is configured. A folder that holds a report's CSVs and no runs (a
committed report, docs/results/NAME) is redrawn from those CSVs as they are."""

from __future__ import annotations

import logging
import shutil
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
    """Write the CSV, the Markdown report and the plots for the runs under `root` into `out` (default root/report,
    or root itself when it holds a report and no runs) and hand them to `logger` (built from the logger config).
    Returns the written files by kind (a figure by its PNG; its PDF lies beside it)."""
    root = Path(root)
    committed = is_report(root)
    out = Path(out) if out is not None else root if committed else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    files = _copy_tables(root, out) if committed else _gather_tables(root, out)
    # Everything below reads what the CSVs say, as a reader of the report would.
    written = pd.read_csv(files["csv"])
    attacked = pd.read_csv(files["persistence_csv"]) if "persistence_csv" in files else pd.DataFrame()
    files["markdown"] = out / MARKDOWN
    write_text(files["markdown"], markdown.markdown(files["csv"], f"Sweep report: {root.resolve().name}")
               + "\n".join(persistence.markdown(attacked)) + ("\n" if not attacked.empty else ""))
    for kind, name, plot in [("tradeoff", TRADEOFF_PNG, plots.plot_tradeoff),
                             ("system_prompts", SYSTEM_PROMPTS_PNG, plots.plot_system_prompts),
                             ("capacity", CAPACITY_PNG, plots.plot_capacity)]:
        if plot(files["csv"], out / name) is not None:
            files[kind] = out / name
    if persistence.plot(attacked, out / persistence.PNG) is not None:
        files["persistence"] = out / persistence.PNG
    logger.log_sweep(table.tradeoff(written), len(written), out, str(root), files)
    log.info("report: %d runs under %s -> %s", len(written), root, out)
    return files


def is_report(root: Path) -> bool:
    """A folder holding a report's runs.csv and no run below it."""
    return (root / CSV).is_file() and not any(root.rglob("summary.json"))


def _gather_tables(root: Path, out: Path) -> dict[str, Path]:
    """runs.csv, and persistence.csv when a run attacked its model, from the run summaries under `root`."""
    files = {"csv": out / CSV}
    table.collect(root).to_csv(files["csv"], index=False)
    attacked = persistence.rows(root)
    if not attacked.empty:
        files["persistence_csv"] = out / persistence.CSV
        attacked.to_csv(files["persistence_csv"], index=False)
    return files


def _copy_tables(root: Path, out: Path) -> dict[str, Path]:
    """A committed report's CSVs, byte for byte: redrawing never rewrites a number."""
    files = {}
    for kind, name in [("csv", CSV), ("persistence_csv", persistence.CSV)]:
        if (root / name).is_file():
            files[kind] = out / name
            if files[kind].resolve() != (root / name).resolve():
                shutil.copyfile(root / name, files[kind])
    return files
