"""The generate stage: write the fingerprint pool with the configured strategy, or take the user's file.

The pool is the first fingerprints.pool_size (else fingerprints.num) fingerprints; downstream stages read its first
fingerprints.num, so a sweep over num with one pool_size embeds nested subsets of one file.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from oml_exp import models
from oml_exp.config import fingerprint_num
from oml_exp.fingerprints import chain_hash, custom, english, instructional, perinucleus, random_word, schema
from oml_exp.fingerprints.common import Context
from oml_exp.store import file_digest

STRATEGIES = {
    "perinucleus": perinucleus.generate,
    "random_word": random_word.generate,
    "english": english.generate,
    "english_random_responses": english.generate_random_responses,
    "custom": custom.generate,
    "chain_hash": chain_hash.generate,
    "instructional": instructional.generate,
}
PUBLIC = {"chain_hash": chain_hash.public}  # what a strategy adds to meta.json for verifiers (never keys)


def key(cfg: DictConfig) -> dict:
    """Exactly what the file depends on; the pipeline adds the model identity and the digest of fingerprints.file."""
    fp = cfg.fingerprints
    out = {"key_length": fp.key_length, "response_length": fp.response_length, "seed": fp.seed,
           "pool": fp.pool_size or fingerprint_num(fp)}
    if fp.file:
        return out
    return {**out, "chat_template": fp.chat_template, "strategy": strategy_key(cfg.strategy)}


def strategy_key(strategy: DictConfig) -> dict:
    out = OmegaConf.to_container(strategy, resolve=True)
    if not uses_english(strategy):
        out.pop("english", None)
    if strategy.get("keys_file"):
        out["keys_file"] = file_digest(strategy.keys_file)  # its content, not its name, makes the keys
    # Models that write keys or pick responses, by their content (the fingerprinted model is in the pipeline's key).
    if out.get("generator"):
        out["generator"] = models.identity(out["generator"])
    if "english" in out:
        out["english"]["writer"] = models.identity(out["english"]["writer"])
    return out


def uses_english(strategy: DictConfig) -> bool:
    """Whether the strategy has an instruct model write English keys or responses (strategy.english.writer)."""
    return strategy.name.startswith("english") or "english" in (
        strategy.get("key_strategy"), strategy.get("response_strategy"))


def run(cfg: DictConfig, inputs, out: Path) -> dict:
    start = time.time()
    ctx = Context(cfg, inputs.model)
    fp, strategy = cfg.fingerprints, cfg.strategy
    rows = custom.pairs(ctx, fp.file) if fp.file else STRATEGIES[strategy.name](ctx)
    where = fp.file or strategy.get("keys_file") or f"strategy {strategy.name}"
    schema.check(rows, str(where), ctx.tokenizer, 1 if fp.file else strategy.get("responses_per_key", 1))
    schema.save(out, rows, meta(ctx, len(rows)))
    return {"strategy": "file" if fp.file else strategy.name, "count": len(rows),
            "seconds": round(time.time() - start, 2)}


def meta(ctx: Context, count: int) -> dict:
    fp, strategy = ctx.fp, ctx.strategy
    source = {"file": str(fp.file)} if fp.file else {
        "strategy": OmegaConf.to_container(strategy, resolve=True), **PUBLIC.get(strategy.name, lambda _: {})(ctx)}
    return {**source, "model": ctx.model, "count": count,
            **{k: fp[k] for k in ("seed", "key_length", "response_length", "chat_template")}}
