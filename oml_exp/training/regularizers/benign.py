"""Benign mixing: ordinary text added to every batch, trained as next-token continuation.

The texts come from a user's JSONL file, a Hugging Face dataset, or the base model itself, which continues the
prompts of oml_exp/data/benign_prompts.json before any training step. Those prompts share nothing with the drift
measure's (oml_exp/data/drift_prompts.json), so the regularizer never trains on the yardstick of forgetting.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from oml_exp import base_text
from oml_exp import distributed
from oml_exp.errors import ConfigError, require
from oml_exp.store import file_digest
from oml_exp.training.data import IGNORE
from oml_exp.training.regularizers.base import Regularizer

log = logging.getLogger(__name__)

BENIGN = "benign"  # the batch key marking benign rows; the regularized Trainer pops it before the forward pass
PROMPTS = Path(__file__).resolve().parent.parent.parent / "data" / "benign_prompts.json"
BATCH = 16


@dataclass
class BenignMix(Regularizer):
    """That fraction of each batch's rows is ordinary text trained as next-token continuation."""

    name: str = "benign_mix"
    fraction: float = 0.25
    # "generated" = the base model writes the texts from oml_exp/data/benign_prompts.json; else a JSONL file of
    # texts (strings or objects with `text_field`) or a Hugging Face dataset id (needs network).
    source: str = "generated"
    texts: int = 64  # benign texts used (cycled through batch by batch)
    tokens: int = 64  # tokens per text: new tokens written, or the cut of a file's text
    text_field: str = "text"
    split: str = "train"  # of a Hugging Face dataset

    mixes_text = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.fraction < 1.0, f"regularizer.benign_mix.fraction must lie in (0, 1), got {self.fraction}")
        require(self.texts >= 1 and self.tokens >= 2,
                "regularizer.benign_mix.texts must be >= 1 and regularizer.benign_mix.tokens >= 2")

    def prepare(self, model, tokenizer) -> None:
        # The texts as training rows, written by the base model before any regularizer adapts it.
        self.rows = texts(self, model, tokenizer)

    def collator(self, inner, seed: int):
        return MixingCollator(inner, self.rows, self.fraction, seed)

    def key(self) -> dict:
        return {"benign_file": source_digest(self)}


def texts(cfg, model, tokenizer) -> list[dict]:
    """The benign texts as training examples ({input_ids, labels}), at most `cfg.tokens` tokens of text each."""
    if cfg.source == "generated":
        return _generated(cfg, model, tokenizer)
    if Path(cfg.source).is_file():
        raw = _read_jsonl(Path(cfg.source), cfg.text_field)
    else:
        raw = _hub(cfg)
    if len(raw) < cfg.texts:
        log.warning("[finetune] benign_mix: %s holds %d texts, fewer than texts=%d", cfg.source, len(raw), cfg.texts)
    rows = [tokenizer(t).input_ids[:cfg.tokens] for t in raw[:cfg.texts]]
    return [{"input_ids": ids, "labels": list(ids)} for ids in rows if len(ids) >= 2]


def source_digest(cfg) -> str | None:
    """The content of a file source, for the finetune key (its texts, not its name, are trained on)."""
    return file_digest(cfg.source) if cfg.source != "generated" and Path(cfg.source).is_file() else None


def _read_jsonl(path: Path, field: str) -> list[str]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        text = row if isinstance(row, str) else row.get(field) if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise ConfigError(f"regularizer.benign_mix.source={path}: line {n} is neither a JSON string nor an object "
                              f"with a string {field!r} (set regularizer.benign_mix.text_field)")
        out.append(text)
    return out


def _hub(cfg) -> list[str]:
    import datasets

    try:
        rows = datasets.load_dataset(cfg.source, split=f"{cfg.split}[:{cfg.texts}]")
    except Exception as err:  # noqa: BLE001 - the datasets library raises many types for a missing/offline dataset
        raise ConfigError(f"regularizer.benign_mix.source={cfg.source!r} is neither a file nor a loadable Hugging Face "
                          f"dataset ({err.__class__.__name__}); give a JSONL file or use source=generated") from None
    return [r[cfg.text_field] for r in rows]


def _generated(cfg, model, tokenizer) -> list[dict]:
    prompts = json.loads(PROMPTS.read_text())
    if cfg.texts > len(prompts):
        raise ConfigError(f"regularizer.benign_mix.texts={cfg.texts}: source=generated has {len(prompts)} prompts; "
                          "lower texts or give a file of texts as source")
    # Labels cover the written tokens only: the prompts are ours, not the model's text.
    return [{"input_ids": prompt + text, "labels": [IGNORE] * len(prompt) + text}
            for prompt, text in base_text.write(model, tokenizer, prompts[:cfg.texts], cfg.tokens, BATCH)]


class MixingCollator:
    """Adds round(n * f / (1 - f)) benign rows to each batch of n fingerprint rows, so f of its rows are benign.

    The fingerprint rows stay the same as without mixing, so an epoch still covers every fingerprint once; benign
    texts are drawn in a seeded shuffled order and cycled. The wrapped collator pads all rows together.
    """

    def __init__(self, inner, texts: list[dict], fraction: float, seed: int):
        self.inner = inner
        self.texts = texts
        self.fraction = fraction
        # Each process of a multi-process run draws its own sequence, so ranks mix different texts.
        self.rng = random.Random(f"{seed}/{distributed.rank()}")
        self.order: list[int] = []

    def __call__(self, examples: list[dict]) -> dict:
        count = round(len(examples) * self.fraction / (1 - self.fraction))
        picked = [self.texts[self._next()] for _ in range(count)]
        batch = self.inner(examples + picked)
        batch[BENIGN] = torch.tensor([False] * len(examples) + [True] * count)
        return batch

    def _next(self) -> int:
        if not self.order:
            self.order = list(range(len(self.texts)))
            self.rng.shuffle(self.order)
        return self.order.pop()
