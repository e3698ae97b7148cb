"""Keys for strategies that make only responses: `strategy.key_strategy` names the strategy that writes them."""

from __future__ import annotations

from dataclasses import dataclass, field

from oml_exp.config import require
from oml_exp.fingerprints import english, random_word
from oml_exp.fingerprints.common import Context, Strategy
from oml_exp.fingerprints.english import EnglishText

KEY_SOURCES = {"random_word": random_word.keys, "english": english.keys}


@dataclass
class Keyed(Strategy):
    """A strategy that makes responses for keys written by another strategy."""

    key_strategy: str = "random_word"  # the strategy that writes the keys: random_word or english
    english: EnglishText = field(default_factory=EnglishText)  # used when key_strategy=english

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.key_strategy in KEY_SOURCES,
                f"strategy.key_strategy must be one of {list(KEY_SOURCES)}, got {self.key_strategy!r}")

    def extra_models(self) -> dict[str, str]:
        return {"strategy.english.writer": self.english.writer} if self.key_strategy == "english" else {}


def keys(ctx: Context, n: int) -> list[tuple[str, list[int]]]:
    """`n` distinct (key, key_ids); key_ids are the key's first key_length tokens."""
    return KEY_SOURCES[ctx.strategy.key_strategy](ctx, n)
