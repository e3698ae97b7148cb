"""Hydra callbacks: the sweep report when a multirun ends (configured in conf/hydra/default.yaml)."""

from __future__ import annotations

import logging

from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportSweep(Callback):
    """Gather every run of the finished sweep into the report; single runs are untouched."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from oml_exp.reporting import sweep

        try:
            sweep.run(config.hydra.sweep.dir, logger=instantiate(config.logger))
        except FileNotFoundError as err:  # a sweep whose jobs wrote no summary (stages without report)
            log.warning("report: skipped: %s", err)
