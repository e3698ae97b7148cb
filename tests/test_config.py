import re
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from oml_exp import components, config, preflight
from tests.conftest import CONF, ROOT


def test_default_config_composes_and_validates(make_cfg):
    cfg = make_cfg()
    typed = config.validate(cfg)
    assert typed.model.path == "embedded:smollm2-135m-instruct"
    assert components.build(cfg.strategy, "strategy").name == "perinucleus"
    assert list(typed.stages) == list(config.DEFAULT_STAGES)


def test_every_config_file_composes(make_cfg):
    for group in ("model", "strategy", "regularizer", "augmentation", "engine", "eval", "logger", "experiment"):
        files = sorted((CONF / group).glob("*.yaml"))
        assert files, f"conf/{group}/ holds no option"
        for path in files:
            preflight.check_config(components.expanded(make_cfg(f"{group}={path.stem}")))


def test_each_logger_option_builds_its_class_with_the_schemas_defaults(make_cfg):
    built = {p.stem: instantiate(make_cfg(f"logger={p.stem}").logger) for p in (CONF / "logger").glob("*.yaml")}
    assert {name: type(obj).__name__ for name, obj in built.items()} == {"none": "NoLogger", "wandb": "WandbLogger"}
    assert (built["wandb"].project, built["wandb"].mode) == (config.LoggerConfig.project, config.LoggerConfig.mode)


def test_misspelled_key_fails_at_composition(make_cfg):
    with pytest.raises(ConfigCompositionException, match="nmu"):
        make_cfg("fingerprints.nmu=3")


@pytest.mark.parametrize("override, key", [
    ("fingerprints.num=0", "fingerprints.num"),
    ("strategy.threshold=1.5", "strategy.threshold"),
    ("stages=[generate,fintune]", "stages"),
    ("fingerprints.pool_size=4", "pool_size"),
    ("logger._target_=oml_exp.reporting.nope.Logger", "logger._target_"),
    ("verbose=-1", "verbose"),
    ("train.lr_schedule=cosine", "train.lr_schedule must be linear or constant, got 'cosine'"),
])
def test_bad_values_name_the_key(make_cfg, override, key):
    with pytest.raises(config.ConfigError, match=key):
        preflight.check_config(components.expanded(make_cfg(override)))


@pytest.mark.parametrize("override, message", [
    ("strategy.thresold=0.9", "strategy.thresold is not a parameter of Perinucleus; its parameters: name, batch_size"),
    ("strategy.threshold=abc", "strategy.threshold: Value 'abc' of type 'str' could not be converted to Float"),
    ("strategy._target_=no.such.Strategy", "strategy._target_='no.such.Strategy' names nothing importable"),
    ("regularizer.averaging.strength=0.5", "regularizer.averaging is set but that regularizer is not picked"),
])
def test_component_keys_are_checked_by_their_class(make_cfg, override, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        components.expanded(make_cfg(override))


def test_cli_prints_config_and_rejects_typos(tmp_path):
    cli = [sys.executable, "-m", "oml_exp", f"paths.output_dir={tmp_path}"]
    shown = subprocess.run(cli + ["--cfg", "job"], capture_output=True, text=True, cwd=ROOT)
    assert shown.returncode == 0 and "key_length: 16" in shown.stdout
    typo = subprocess.run(cli + ["model=smollm3"], capture_output=True, text=True, cwd=ROOT)
    assert typo.returncode != 0 and "Could not find 'model/smollm3'" in typo.stderr
    bad = subprocess.run(cli + ["fingerprints.num=-1"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "oml-exp: error: fingerprints.num must be >= 1 or null (all of fingerprints.file), got -1")
