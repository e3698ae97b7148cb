"""custom: the user's keys (strategy.keys_file) with responses by strategy.response_strategy; and the user's complete
file of pairs (fingerprints.file), used as is: rows that carry token ids keep them, others are tokenized here, the
key cut to key_length tokens (as training would) and the response whole."""

from __future__ import annotations

from oml_exp.config import ConfigError
from oml_exp.fingerprints import english, perinucleus, random_word, schema
from oml_exp.fingerprints.common import Context, encode, pair_rows, row

RESPONSES = {"random_word": random_word.responses, "english": english.responses}


def keys(ctx: Context, n: int) -> list[tuple[str, list[int]]]:
    if not ctx.strategy.keys_file:
        raise ConfigError("strategy=custom needs strategy.keys_file=PATH (a JSON array of keys)")
    texts = schema.read_keys(ctx.strategy.keys_file, n)[:n]
    return [(text, encode(ctx.tokenizer, text)[:ctx.fp.key_length]) for text in texts]


def generate(ctx: Context) -> list[dict]:
    if ctx.strategy.response_strategy == "perinucleus":
        return perinucleus.rows_for(ctx, keys(ctx, -(-ctx.pool // ctx.strategy.responses_per_key)))[:ctx.pool]
    found = keys(ctx, ctx.pool)
    return pair_rows(ctx, found, RESPONSES[ctx.strategy.response_strategy](ctx, len(found)))


def pairs(ctx: Context, path: str) -> list[dict]:
    tok = ctx.tokenizer
    return [row(tok, r["key"], r.get("key_ids") or encode(tok, r["key"])[:ctx.fp.key_length],
                r.get("response_ids") or encode(tok, r["response"]), r.get("response_prob"))
            for r in schema.read_pairs(path, ctx.pool)[:ctx.pool]]
