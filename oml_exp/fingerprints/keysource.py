"""Keys for strategies that make only responses: `strategy.key_strategy` names the strategy that writes them."""

from __future__ import annotations

from oml_exp.fingerprints import english, random_word
from oml_exp.fingerprints.common import Context

KEY_SOURCES = {"random_word": random_word.keys, "english": english.keys}


def keys(ctx: Context, n: int) -> list[tuple[str, list[int]]]:
    """`n` distinct (key, key_ids); key_ids are the key's first key_length tokens."""
    return KEY_SOURCES[ctx.strategy.key_strategy](ctx, n)
