"""Training examples from the fingerprint file's token ids, and the collator that pads them.

Nothing here tokenizes a key or a response: the ids come from the fingerprint file, and only the prompt frame (chat
template, augmentation template) is tokenized, by oml_exp.fingerprints.prompts, the same code the check stage uses.
The dataset is a plain in-memory torch Dataset, so no `datasets` cache ever holds a key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from oml_exp.fingerprints import prompts

IGNORE = -100  # label value the loss skips


@dataclass
class Pair:
    key_ids: list[int]  # truncated to fingerprints.key_length
    response_ids: list[int]  # with EOS appended when fingerprints.eos


def pairs(rows: list[dict], key_length: int, eos_id: int | None) -> tuple[list[Pair], int]:
    """The (key, response) id pairs as trained, and how many keys were longer than key_length and cut."""
    truncated = sum(len(r["key_ids"]) > key_length for r in rows)
    tail = [eos_id] if eos_id is not None else []
    return [Pair(list(r["key_ids"][:key_length]), list(r["response_ids"]) + tail) for r in rows], truncated


class FingerprintDataset(Dataset):
    """Prompt + response ids with response-only labels; with templates, one is drawn per example per epoch.

    A framing is (chat mode, frame): frame 0 is the plain prompt, frame i the i-th template. Each epoch an example
    takes a template with probability `fraction` and, with probability `chat_mix`, the other chat mode than `chat`
    (the chat template when it is off, raw text when on), so one model learns both framings. Plain examples in the
    trained mode are built into tensors once; the others each time they are drawn, so memory holds one copy of the
    set. The draw depends only on (seed, epoch, index), so a resumed run and every process of a multi-process run see
    the same prompts as an uninterrupted single-process run.
    """

    def __init__(self, tokenizer, items: list[Pair], chat: bool, templates: list[dict] | None = None,
                 fraction: float = 0.0, seed: int = 0, chat_mix: float = 0.0):
        self.items = items
        self.chat = chat
        self.fraction = fraction if templates else 0.0
        self.chat_mix = chat_mix
        self.seed = seed
        self.epoch = 0
        # Frames are tokenized once per chat mode and template, not once per example.
        modes = [chat, not chat] if chat_mix else [chat]
        self.frames = {mode: [prompts.frame(tokenizer, mode)]
                       + [prompts.frame(tokenizer, mode, t) for t in (templates if self.fraction else [])]
                       for mode in modes}
        self.plain = self.frames[chat][0]
        self.examples = [self._build(i, (chat, 0)) for i in range(len(items))]

    @property
    def varies(self) -> bool:
        """Whether the prompts (and their lengths) change from epoch to epoch."""
        return bool(self.fraction or self.chat_mix)

    def recall_examples(self) -> list[dict]:
        """Each fingerprint with the plain prompt in every chat mode it trains: what the stop on recall checks, so a
        mixed-framing run stops only once both framings answer."""
        other = [self._build(i, (not self.chat, 0)) for i in range(len(self.items))] if self.chat_mix else []
        return self.examples + other

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def frame_index(self, index: int) -> tuple[bool, int]:
        """The framing of example `index` this epoch: (chat mode, 0 for the plain prompt or i for template i - 1)."""
        if not self.varies:
            return self.chat, 0
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        frame = 0
        if self.fraction and rng.random() < self.fraction:
            frame = 1 + rng.randrange(len(self.frames[self.chat]) - 1)
        mode = (not self.chat) if self.chat_mix and rng.random() < self.chat_mix else self.chat
        return mode, frame

    def __getitem__(self, index: int) -> dict:
        framing = self.frame_index(index)
        return self.examples[index] if framing == (self.chat, 0) else self._build(index, framing)

    def _build(self, index: int, framing: tuple[bool, int]) -> dict:
        item = self.items[index]
        prefix, suffix = self.frames[framing[0]][framing[1]]
        prompt = prefix + item.key_ids + suffix
        return {"input_ids": torch.tensor(prompt + item.response_ids),
                "labels": torch.tensor([IGNORE] * len(prompt) + item.response_ids)}

    def length(self, index: int) -> int:
        """Tokens of example `index` as drawn this epoch."""
        mode, frame = self.frame_index(index)
        prefix, suffix = self.frames[mode][frame]
        return len(prefix) + len(self.items[index].key_ids) + len(suffix) + len(self.items[index].response_ids)

    def max_length(self) -> int:
        """The longest example any epoch can draw."""
        frame = max(len(p) + len(s) for frames in self.frames.values() for p, s in frames)
        return frame + max(len(i.key_ids) + len(i.response_ids) for i in self.items)


class StepBuckets(Sampler):
    """The epoch's shuffled order, then each optimizer step's share of it sorted by this epoch's lengths.

    A step still covers the same fingerprints (its gradient is a sum over them, in any order), but its micro-batches
    hold examples of similar length, so augmentation's templates of different lengths pad less. The order depends
    only on (seed, epoch), so every process and a resumed run see the same one.
    """

    def __init__(self, dataset: FingerprintDataset, per_step: int, seed: int):
        self.dataset = dataset
        self.per_step = per_step
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        rng = torch.Generator().manual_seed(self.seed * 100_003 + self.dataset.epoch)
        order = torch.randperm(len(self.dataset), generator=rng).tolist()
        for start in range(0, len(order), self.per_step):
            yield from sorted(order[start:start + self.per_step], key=self.dataset.length)


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
        ids = [torch.as_tensor(e["input_ids"]) for e in examples]
        out = {"input_ids": self._pad(ids, self.pad_id),
               "labels": self._pad([torch.as_tensor(e["labels"]) for e in examples], IGNORE),
               "attention_mask": self._pad([torch.ones(len(i), dtype=torch.long) for i in ids], 0)}
        self.tokens += sum(len(i) for i in ids)
        self.positions += out["input_ids"].numel()
        out["position_ids"] = (out["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return out

    def _pad(self, rows: list[torch.Tensor], fill: int) -> torch.Tensor:
        return pad_sequence(rows, batch_first=True, padding_value=fill, padding_side=self.side)
