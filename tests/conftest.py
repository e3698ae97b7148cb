"""Shared fixtures: the real configs composed with Hydra's compose API into tmp paths, and the models."""

from __future__ import annotations

import os

# Tests never reach the network: everything comes from the cache, the embedded model and ../shared.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from oml_exp import config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
BENCHMARKS = ROOT.parent / "shared" / "benchmarks"
SMOLLM2 = "embedded:smollm2-135m-instruct"

config.register()
CLEAN_ENV = dict(os.environ)


def compose_config(overrides: list[str], output_dir: Path):
    """Compose conf/config.yaml as the CLI would, with every output under `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={output_dir}", *overrides])


def subprocess_env() -> dict:
    """The environment from before any test ran: in-process DeepSpeed runs leave rendezvous (RANK, MASTER_PORT) and
    accelerate variables behind, which would make a child process (a CLI run, a sweep) join a dead process group."""
    return dict(CLEAN_ENV)


@pytest.fixture
def make_cfg(tmp_path):
    return lambda *overrides: compose_config(list(overrides), tmp_path)


@pytest.fixture(scope="session")
def tiny():
    from oml_exp import models

    return models.load("tiny:llama", device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    """The one SmolLM2 load shared by the end-to-end tests."""
    from oml_exp import models

    return models.load(SMOLLM2, device="cpu")
