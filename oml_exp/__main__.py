"""The one entrypoint: `oml-exp [group=option ...] [key=value ...]` (also `python -m oml_exp`)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from oml_exp import config, pipeline
from oml_exp.checking.templates import TemplateError
from oml_exp.evaluation.tasks import EvalError
from oml_exp.fingerprints.schema import FingerprintFileError
from oml_exp.models import ModelError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# Mistakes in the config or the inputs: reported as one line naming the problem and the fix, without a stack trace.
USER_ERRORS = (config.ConfigError, ModelError, FingerprintFileError, EvalError, TemplateError, OmegaConfBaseException)

config.register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> dict:
    try:
        config.validate(cfg)
        return pipeline.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except USER_ERRORS as err:
        print(f"oml-exp: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
