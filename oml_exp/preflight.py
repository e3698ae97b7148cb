"""Preflight: what a run needs that can be checked without loading weights, checked before any stage runs.

A mistake found here costs a second instead of a generation or a training run: the config's values
(config.validate), the device, the models named anywhere in the config (found, cached when offline, the same
tokenizer where token ids must mean the same thing), what the attacks need (a merge partner of the same
architecture, an sft data file), the fingerprints' length against the model's positions, that a
check has fingerprints to look for, the user's fingerprint and keys files, the evaluation data, and what verify
needs (an endpoint, a writable ledger with enough unspent fingerprints). Every problem raises the user error of its
module (ConfigError, ModelError, FingerprintFileError, EvalError): one line naming the key and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from oml_exp import components, config, models
from oml_exp.attacks import stage as attacking
from oml_exp.config import ConfigError, fingerprint_num
from oml_exp.evaluation import tasks
from oml_exp.fingerprints import generate, schema
from oml_exp.store import file_digest
from oml_exp.training import regularizers
from oml_exp.verification import ledger

FINGERPRINT_STAGES = ("generate", "finetune", "check")


def check(cfg: DictConfig) -> None:
    """Raise the user error naming the first problem this run would meet; stages not run are not checked for."""
    check_config(cfg)
    stages = config.stages_to_run(cfg)
    models.pick_device(cfg.device)
    check_stage_inputs(cfg)
    models.check_spec(cfg.model.path, "model.path")
    if set(stages) & set(FINGERPRINT_STAGES):
        check_positions(cfg)
    if "generate" in stages:
        check_generation(cfg)
    if "attack" in stages:
        for attack in attacking.picked(cfg.attack):
            attack.check(cfg.model.path, cfg.engine)
    if "check" in stages:
        for spec in cfg.check.false_positive_models:
            if spec != "base":
                check_same_tokenizer(cfg, spec, "check.false_positive_models")
    if "evaluate" in stages:
        tasks.check(tasks.plan(cfg.eval), cfg.eval.num_fewshot)
    if "verify" in stages:
        check_verify(cfg)


def check_stage_inputs(cfg: DictConfig) -> None:
    """A check needs fingerprints that were trained into the model: its own run's, or the owner's file; verify
    needs the owner's file, which its ledger is kept for."""
    asked = set(cfg.stages)
    if "check" in asked and not asked & {"generate", "finetune"} and not cfg.fingerprints.file:
        raise ConfigError("stages=[check] without fingerprints.file would check fresh keys no model was trained on; "
                          "checking a suspect model needs the owner's fingerprints: fingerprints.file=PATH (to check "
                          "fresh keys on model.path anyway: stages=[generate,check])")
    if "verify" in asked and not cfg.fingerprints.file:
        raise ConfigError("stages=[verify] needs the owner's fingerprint file, whose spent fingerprints its ledger "
                          "records: fingerprints.file=PATH")


def check_verify(cfg: DictConfig) -> None:
    """The endpoint named, the ledger writable and holding enough unspent fingerprints, the chance-rate models."""
    v = cfg.verify
    if not v.url:
        raise ConfigError("verify.url is not set; give the API's base URL, e.g. verify.url=http://127.0.0.1:8000/v1")
    if not v.model:
        raise ConfigError("verify.model is not set; give the name the server serves the model under (its /v1/models "
                          "lists it), e.g. verify.model=NAME")
    folder = Path(cfg.paths.ledger).resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"paths.ledger={cfg.paths.ledger!r} cannot be written ({existing} is not a writable "
                          "folder); make it writable or set paths.ledger to a writable folder")
    pool = fingerprint_num(cfg.fingerprints) or len(schema.read_pairs(cfg.fingerprints.file, None))
    book = ledger.path(folder, file_digest(cfg.fingerprints.file))
    ledger.pick(ledger.spent(book), pool, v.num, v.force_spent, book)
    for spec in v.false_positive_models:
        if spec != "base":
            check_same_tokenizer(cfg, spec, "verify.false_positive_models")


def check_positions(cfg: DictConfig) -> None:
    fp = cfg.fingerprints
    tokens = fp.key_length + fp.response_length + (1 if cfg.fingerprints.eos else 0)
    limit = models.positions(cfg.model.path)
    if limit is not None and tokens > limit:
        raise ConfigError(f"fingerprints.key_length={fp.key_length} plus the response makes {tokens} tokens, more than "
                          f"the {limit} positions of model.path={cfg.model.path!r} (max_position_embeddings in its "
                          "config.json); lower fingerprints.key_length")


def check_config(cfg: DictConfig) -> None:
    """Every value: the typed sections (config.validate), each component built by its class (its checks run), and
    the regularizers against the engine."""
    config.validate(cfg)
    components.build(cfg.strategy, "strategy")
    attacking.picked(cfg.attack)
    regularizers.check_engine(regularizers.picked(cfg.regularizer), cfg.engine)


def check_generation(cfg: DictConfig) -> None:
    """The files and models the generate stage reads: the user's file, or the strategy's keys file and models."""
    ctx = generate.context(cfg, cfg.model.path)
    if cfg.fingerprints.file:
        schema.read_pairs(cfg.fingerprints.file, ctx.pool)
        return
    ctx.strategy.check(ctx)
    for where, spec in ctx.strategy.extra_models().items():
        if where == "strategy.generator":
            check_same_tokenizer(cfg, spec, where)  # its distribution must be over the fingerprints' token ids
        else:
            models.check_spec(spec, where)


def check_same_tokenizer(cfg: DictConfig, spec: str, key: str) -> None:
    """`spec` must exist and read the fingerprints' token ids as model.path does."""
    models.check_spec(spec, key)
    if vocabulary(spec, key) != vocabulary(cfg.model.path, "model.path"):
        raise ConfigError(f"{key}: {spec!r} has another tokenizer than model.path={cfg.model.path!r}, so the "
                          "fingerprints' token ids mean nothing to it; use a model of the same family")


def vocabulary(spec: str, key: str) -> dict:
    try:
        return models.load_tokenizer(spec).get_vocab()
    except (OSError, ValueError) as err:
        raise models.ModelError(f"{key}={spec!r}: cannot read its tokenizer: {str(err).splitlines()[0]}") from None
