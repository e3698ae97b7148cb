"""instructional (Instructional Fingerprinting, a peer's method): obscure keys, each key_length tokens drawn
uniformly from the vocabulary, all mapped to one shared response (strategy.response, used whole)."""

from __future__ import annotations

from dataclasses import dataclass

from oml_exp.config import ConfigError, require
from oml_exp.fingerprints.common import (Context, Strategy, decode, distinct_draws, encode, key_text, pair_rows,
                                         round_trips)


def keys(ctx: Context, n: int) -> list[tuple[str, list[int]]]:
    tok = ctx.tokenizer
    special = set(tok.all_special_ids)
    vocab = [i for i in range(len(tok)) if i not in special and readable(decode(tok, [i]))]
    found = distinct_draws(ctx.rng("instructional/keys"), vocab, ctx.fp.key_length, n, "instructional keys",
                           "lower fingerprints.num/pool_size or raise fingerprints.key_length")
    return [(key_text(tok, k), k) for k in found]


def readable(text: str) -> bool:
    """Obscure but printable: no control characters and no partial UTF-8 sequences (decoded as U+FFFD)."""
    return bool(text.strip()) and text.isprintable() and "\ufffd" not in text


@dataclass
class Instructional(Strategy):
    name: str = "instructional"
    response: str = "\u30cf\u30ea\u30cd\u30ba\u30df"  # "hedgehog" in Japanese, the paper's response; used whole

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.response.strip()), "strategy.response must be non-empty")

    def generate(self, ctx: Context) -> list[dict]:
        response = encode(ctx.tokenizer, self.response)
        if not round_trips(ctx.tokenizer, response):
            raise ConfigError(f"strategy.response={self.response!r} does not survive a decode/encode round trip "
                              "in this tokenizer; choose another response")
        return pair_rows(ctx, keys(ctx, ctx.pool), [response] * ctx.pool)
