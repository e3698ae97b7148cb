"""custom: the user's keys (strategy.keys_file) with responses by strategy.response_strategy, or with their own
responses when the file's entries carry them (`response`, or the reference system's `signature`); and the user's
complete file of pairs (fingerprints.file). Given pairs are used as is: rows that carry token ids keep them, others
are tokenized here, the key cut to key_length tokens (as training would) and the response whole."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from oml_exp.config import ConfigError, require, require_file
from oml_exp.fingerprints import english, perinucleus, random_word, schema
from oml_exp.fingerprints.common import Context, encode, pair_rows, row

log = logging.getLogger(__name__)

RESPONSES = {"random_word": random_word.responses, "english": english.responses}  # besides perinucleus


@dataclass
class Custom(perinucleus.Perinucleus):
    """The user's keys (a JSON array of strings or of objects with `key`); responses by `response_strategy`."""

    name: str = "custom"
    keys_file: Optional[str] = None  # required; checked when generating, so every strategy file composes alone
    response_strategy: str = "perinucleus"  # perinucleus, random_word or english

    def __post_init__(self) -> None:
        super().__post_init__()
        require_file(self.keys_file, "strategy.keys_file")
        choices = ["perinucleus", *RESPONSES]
        require(self.response_strategy in choices,
                f"strategy.response_strategy must be one of {choices}, got {self.response_strategy!r}")

    def generate(self, ctx: Context) -> list[dict]:
        if schema.carries_responses(keys_file(ctx)):
            # The user's own pairs: replacing their responses with new ones would embed fingerprints they never chose.
            log.info("[generate] strategy.keys_file gives a response for each key: using them "
                     "(strategy.response_strategy is not used)")
            return pairs(ctx, keys_file(ctx))
        if self.response_strategy == "perinucleus":
            return perinucleus.rows_for(ctx, keys(ctx, keys_needed(ctx)))[:ctx.pool]
        found = keys(ctx, ctx.pool)
        return pair_rows(ctx, found, RESPONSES[self.response_strategy](ctx, len(found)))

    def check(self, ctx: Context) -> None:
        """Read the keys file as generation will, so a bad one fails before any model is loaded."""
        if schema.carries_responses(keys_file(ctx)):
            schema.read_pairs(keys_file(ctx), ctx.pool)
        else:
            schema.read_keys(keys_file(ctx), keys_needed(ctx))

    def extra_models(self) -> dict[str, str]:
        # The keys come from the file, so only english responses use the writer.
        return {**({"strategy.english.writer": self.english.writer} if self.response_strategy == "english" else {}),
                **({"strategy.generator": self.generator} if self.generator else {})}


def keys(ctx: Context, n: int) -> list[tuple[str, list[int]]]:
    texts = schema.read_keys(keys_file(ctx), n)[:n]
    return [(text, encode(ctx.tokenizer, text)[:ctx.fp.key_length]) for text in texts]


def keys_file(ctx: Context) -> str:
    if not ctx.strategy.keys_file:
        raise ConfigError("strategy=custom needs strategy.keys_file=PATH (a JSON array of keys)")
    return ctx.strategy.keys_file


def keys_needed(ctx: Context) -> int:
    """Keys to read: perinucleus can give each key several responses."""
    if ctx.strategy.response_strategy == "perinucleus":
        return -(-ctx.pool // ctx.strategy.responses_per_key)
    return ctx.pool


def pairs(ctx: Context, path: str) -> list[dict]:
    tok = ctx.tokenizer
    return [row(tok, r["key"], r.get("key_ids") or encode(tok, r["key"])[:ctx.fp.key_length],
                r.get("response_ids") or encode(tok, r["response"]), r.get("response_prob"))
            for r in schema.read_pairs(path, ctx.pool)[:ctx.pool]]
