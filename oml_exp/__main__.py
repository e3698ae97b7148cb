"""The one entrypoint: `oml-exp [group=option ...] [key=value ...]` (also `python -m oml_exp`).

Only Hydra and the config schema load at import: --help and tab completion never reach `job`, so they never wait for
torch and transformers, which the pipeline imports once a run is composed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from oml_exp import config, distributed, runs, usage

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

config.register()
runs.register()
usage.register()


def main() -> None:
    job()  # a failed run exits inside (sys.exit), before the group is left: see distributed.leave
    distributed.leave()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def job(cfg: DictConfig) -> dict:
    from oml_exp import pipeline, verbosity
    from oml_exp.store import WriteError

    verbosity.configure(cfg.verbose)
    try:
        return pipeline.run(cfg, Path(HydraConfig.get().runtime.output_dir))  # its preflight validates the config
    except user_errors() as err:
        fail(err)
    except OSError as err:
        if err.errno not in WriteError.ONLY_WRITES:
            raise
        fail(WriteError.of(err.filename or "a file", err))  # a save outside the store's own writes: models, checkpoints


def user_errors() -> tuple[type[Exception], ...]:
    """Mistakes in the config or the inputs: reported as one line naming the problem and the fix, without a stack
    trace. Imported here, with the pipeline that raises them (see the module's docstring)."""
    from omegaconf.errors import OmegaConfBaseException

    from oml_exp.evaluation.tasks import EvalError
    from oml_exp.fingerprints.schema import FingerprintFileError
    from oml_exp.manifest import DamagedEntryError
    from oml_exp.models import ModelError
    from oml_exp.store import WriteError
    from oml_exp.templates import TemplateError
    from oml_exp.verification.remote import VerifyError

    return (config.ConfigError, ModelError, FingerprintFileError, EvalError, TemplateError, OmegaConfBaseException,
            DamagedEntryError, WriteError, VerifyError)


def fail(err: Exception) -> None:
    print(f"oml-exp: error: {err}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
