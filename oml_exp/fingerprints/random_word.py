"""random_word: keys of `key_length` random words and responses of `response_length` random words (the paper's
baseline).

The word list is the tokenizer's own whole-word tokens (a space marker followed by lowercase letters), so it needs
no download and every word is exactly one token: a key of key_length words is key_length tokens long, and the number
of distinct keys is known exactly.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from oml_exp.fingerprints.common import Context, Strategy, distinct_draws, key_text, pair_rows, round_trips

WORD = re.compile(r"[\u0120\u2581 ]([a-z]{3,})")  # byte-level BPE (Ġ), SentencePiece (▁) or plain space markers


@functools.lru_cache(maxsize=4)
def word_ids(tokenizer) -> tuple[int, ...]:
    """Ids of the whole-word tokens whose text re-encodes to themselves, in id order."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return tuple(i for i, t in enumerate(tokens) if t and WORD.fullmatch(t) and round_trips(tokenizer, [i]))


def keys(ctx: Context, n: int) -> list[tuple[str, list[int]]]:
    """`n` distinct (key, key_ids), each key key_length word tokens."""
    found = distinct_draws(ctx.rng("random_word/keys"), word_ids(ctx.tokenizer), ctx.fp.key_length, n,
                           "random-word keys", "lower fingerprints.num/pool_size or raise fingerprints.key_length")
    return [(key_text(ctx.tokenizer, k), k) for k in found]


def responses(ctx: Context, n: int) -> list[list[int]]:
    """`n` responses of response_length word tokens. Each word is a token that round-trips alone, and tokenizers
    split text at spaces before merging, so the joined words round-trip too (schema.check verifies)."""
    rng = ctx.rng("random_word/responses")
    return [rng.choices(word_ids(ctx.tokenizer), k=ctx.fp.response_length) for _ in range(n)]


@dataclass
class RandomWord(Strategy):
    name: str = "random_word"

    def generate(self, ctx: Context) -> list[dict]:
        return pair_rows(ctx, keys(ctx, ctx.pool), responses(ctx, ctx.pool))
