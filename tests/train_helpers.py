"""Shared by the training tests and their multi-process worker: a composed config, fake fingerprints, a run."""

from __future__ import annotations

import random
from pathlib import Path

from hydra import compose, initialize_config_dir

from oml_exp import components, config, models, preflight
from oml_exp.fingerprints import schema
from oml_exp.pipeline import Inputs

CONF = str(Path(__file__).resolve().parent.parent / "conf")
# Fast and sure to converge on the random-init tiny model; no checkpoints unless a test asks.
TINY = ["model=tiny", "train.lr=3e-2", "train.batch_size=4", "train.epochs=30", "train.checkpoint_every=0",
        "fingerprints.num=8", "fingerprints.key_length=6"]


def make_config(*overrides: str):
    config.register()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = components.expanded(compose("config", overrides=[*TINY, *overrides]))
    preflight.check_config(cfg)
    return cfg


def fake_fingerprints(folder: Path, cfg, extra_key_tokens: int = 0, seed: int = 0) -> Path:
    """Random-token keys and one-token responses, as a generate stage would write them; keys can run long."""
    tokenizer = models.load_tokenizer(cfg.model.path)
    rng = random.Random(seed)
    vocab = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    rows = []
    for _ in range(cfg.fingerprints.num):
        key = [rng.choice(vocab) for _ in range(cfg.fingerprints.key_length + extra_key_tokens)]
        response = [rng.choice(vocab) for _ in range(cfg.fingerprints.response_length)]
        rows.append({"key": tokenizer.decode(key), "response": tokenizer.decode(response),
                     "effective_key": tokenizer.decode(key), "key_ids": key, "response_ids": response})
    folder.mkdir(parents=True, exist_ok=True)
    schema.save(folder, rows, {"strategy": "fake"})
    return folder


def train(cfg, fingerprints: Path, out: Path) -> dict:
    from oml_exp.training import finetune

    out.mkdir(parents=True, exist_ok=True)
    return finetune.run(cfg, Inputs(model=cfg.model.path, base_model=cfg.model.path, fingerprints=fingerprints), out)
