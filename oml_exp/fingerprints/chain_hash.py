"""chain_hash (Chain & Hash, a peer's method): each key is a question whose answer is one of `candidates` random-word
answers, chosen by SHA-256 over the question, all questions and all answers, so no answer can be picked after the
fact. The candidates are public (meta.json); the questions are the secret keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from oml_exp.config import require
from oml_exp.fingerprints import keysource, random_word
from oml_exp.fingerprints.common import Context, decode, distinct_draws, pair_rows


def candidates(ctx: Context) -> list[list[int]]:
    """strategy.candidates distinct answers of response_length word tokens."""
    return distinct_draws(ctx.rng("chain_hash/candidates"), random_word.word_ids(ctx.tokenizer),
                          ctx.fp.response_length, ctx.strategy.candidates, "chain_hash answers",
                          "lower strategy.candidates or raise fingerprints.response_length")


def answer_index(question: str, questions: list[str], answers: list[str]) -> int:
    blob = json.dumps([question, questions, answers], ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(blob).digest(), "big") % len(answers)


@dataclass
class ChainHash(keysource.Keyed):
    name: str = "chain_hash"
    candidates: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.candidates >= 2, f"strategy.candidates must be >= 2, got {self.candidates}")

    def generate(self, ctx: Context) -> list[dict]:
        keys = keysource.keys(ctx, ctx.pool)
        answers = candidates(ctx)
        questions = [text for text, _ in keys]
        texts = self.public(ctx)["candidates"]
        return pair_rows(ctx, keys, [answers[answer_index(q, questions, texts)] for q in questions])

    def public(self, ctx: Context) -> dict:
        """What a verifier needs besides the keys: the candidate answers, in order."""
        return {"candidates": [decode(ctx.tokenizer, a) for a in candidates(ctx)]}
