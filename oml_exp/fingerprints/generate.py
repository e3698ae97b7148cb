"""The generate stage: write the fingerprint pool with the configured strategy, or take the user's file.

The pool is the first fingerprints.pool_size (else fingerprints.num) fingerprints; downstream stages read its first
fingerprints.num, so a sweep over num with one pool_size embeds nested subsets of one file.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from oml_exp import components, models
from oml_exp.config import fingerprint_num
from oml_exp.fingerprints import custom, schema
from oml_exp.fingerprints.common import Context
from oml_exp.store import file_digest


def key(cfg: DictConfig) -> dict:
    """Exactly what the file depends on; the pipeline adds the model identity and the digest of fingerprints.file."""
    fp = cfg.fingerprints
    out = {"key_length": fp.key_length, "response_length": fp.response_length, "seed": fp.seed,
           "pool": fp.pool_size or fingerprint_num(fp)}
    if fp.file:
        return out
    return {**out, "chat_template": fp.chat_template, "strategy": strategy_key(cfg.strategy)}


def strategy_key(node: DictConfig) -> dict:
    """The strategy's full parameters, with the files and models it reads by content (the fingerprinted model is in
    the pipeline's key)."""
    out = OmegaConf.to_container(components.typed(node, "strategy"))
    extra = components.build(node, "strategy").extra_models()
    if "strategy.english.writer" in extra:
        out["english"]["writer"] = models.identity(extra["strategy.english.writer"])
    else:
        out.pop("english", None)  # unused: its settings must not split the store
    if "strategy.generator" in extra:
        out["generator"] = models.identity(extra["strategy.generator"])
    if out.get("keys_file"):
        out["keys_file"] = file_digest(out["keys_file"])  # its content, not its name, makes the keys
    return out


def context(cfg: DictConfig, model: str) -> Context:
    return Context(cfg.fingerprints, components.build(cfg.strategy, "strategy"), model, cfg.device, cfg.model.dtype)


def run(cfg: DictConfig, inputs, out: Path) -> dict:
    start = time.time()
    ctx = context(cfg, inputs.model)
    fp, strategy = cfg.fingerprints, ctx.strategy
    rows = custom.pairs(ctx, fp.file) if fp.file else strategy.generate(ctx)
    where = fp.file or getattr(strategy, "keys_file", None) or f"strategy {strategy.name}"
    schema.check(rows, str(where), ctx.tokenizer, 1 if fp.file else getattr(strategy, "responses_per_key", 1))
    schema.save(out, rows, meta(ctx, len(rows)))
    return {"strategy": "file" if fp.file else strategy.name, "count": len(rows),
            "seconds": round(time.time() - start, 2)}


def meta(ctx: Context, count: int) -> dict:
    fp, strategy = ctx.fp, ctx.strategy
    source = {"file": str(fp.file)} if fp.file else {"strategy": dataclasses.asdict(strategy), **strategy.public(ctx)}
    return {**source, "model": ctx.model, "count": count,
            **{k: fp[k] for k in ("seed", "key_length", "response_length", "chat_template")}}
