"""Training examples from the fingerprint file's token ids, and the collator that pads them.

Nothing here tokenizes a key or a response: the ids come from the fingerprint file, and only the prompt frame (chat
template, augmentation template) is tokenized, by oml_exp.fingerprints.prompts, the same code the check stage uses.
The dataset is a plain in-memory torch Dataset, so no `datasets` cache ever holds a key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from oml_exp.fingerprints import prompts

IGNORE = -100  # label value the loss skips


@dataclass
class Pair:
    key_ids: list[int]  # truncated to fingerprints.key_length
    response_ids: list[int]  # with EOS appended when train.eos


def pairs(rows: list[dict], key_length: int, eos_id: int | None) -> tuple[list[Pair], int]:
    """The (key, response) id pairs as trained, and how many keys were longer than key_length and cut."""
    truncated = sum(len(r["key_ids"]) > key_length for r in rows)
    tail = [eos_id] if eos_id is not None else []
    return [Pair(list(r["key_ids"][:key_length]), list(r["response_ids"]) + tail) for r in rows], truncated


class FingerprintDataset(Dataset):
    """Prompt + response ids with response-only labels; with templates, one is drawn per example per epoch.

    The draw depends only on (seed, epoch, index), so a resumed run and every process of a multi-process run see
    the same prompts as an uninterrupted single-process run.
    """

    def __init__(self, tokenizer, items: list[Pair], chat: bool, templates: list[dict] | None = None,
                 fraction: float = 0.0, seed: int = 0):
        self.items = items
        self.fraction = fraction if templates else 0.0
        self.seed = seed
        self.epoch = 0
        # Frames are tokenized once per template, not once per example.
        self.plain = prompts.frame(tokenizer, chat)
        self.frames = [prompts.frame(tokenizer, chat, t) for t in templates or []]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def frame_index(self, index: int) -> int | None:
        """Which template wraps example `index` this epoch; None = the plain prompt."""
        if not self.frames:
            return None
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        return rng.randrange(len(self.frames)) if rng.random() < self.fraction else None

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        which = self.frame_index(index)
        prefix, suffix = self.plain if which is None else self.frames[which]
        prompt = prefix + item.key_ids + suffix
        return {"input_ids": prompt + item.response_ids,
                "labels": [IGNORE] * len(prompt) + item.response_ids}


@dataclass
class Collator:
    """Pads to the batch's longest example on the tokenizer's side.

    Padding is marked by the attention mask and IGNORE labels, never recognised by token value, so pad == eos cannot
    hide a trained EOS. Position ids count real tokens only, so a left-padded example sees the same positions as
    when it is checked alone.
    """

    pad_id: int
    side: str = "right"
    tokens: int = 0  # real tokens collated so far (throughput)
    positions: int = 0  # padded positions collated so far (padding waste = 1 - tokens / positions)

    def __call__(self, examples: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in examples)
        self.tokens += sum(len(e["input_ids"]) for e in examples)
        self.positions += width * len(examples)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for e in examples:
            n = len(e["input_ids"])
            rows = (e["input_ids"], e["labels"], [1] * n)
            fills = (self.pad_id, IGNORE, 0)
            for name, row, fill in zip(batch, rows, fills):
                pad = [fill] * (width - n)
                batch[name].append(pad + row if self.side == "left" else row + pad)
        out = {name: torch.tensor(rows) for name, rows in batch.items()}
        out["position_ids"] = (out["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return out

