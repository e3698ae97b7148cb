"""What an anti-forgetting regularizer is to the finetune stage: its parameters and the hooks it fills.

A regularizer is a dataclass (parameters with types, defaults and checks) named by `_target_` in its file of
conf/regularizer/; regularizer=[a,b] picks several. The finetune stage calls every hook of every picked regularizer,
in this order: prepare (read the untouched base model), adapt (change the model in place), then training with their
callbacks, collators and penalties, then finish (turn the model back into one plain transformers loads).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Optional

import torch

from oml_exp.errors import require


@dataclass
class Regularizer:
    name: str = "regularizer"  # fixed by the class: reports and labels show it

    # ZeRO-3 keeps only a shard of each weight outside forward; a penalty's gradient and the folding of new units or
    # adapters into the saved weights need whole ones.
    whole_weights: ClassVar[bool] = False
    chooses_weights: ClassVar[bool] = False  # it decides which weights train (only one regularizer may)
    needs_base: ClassVar[bool] = False  # it reads theta_base, the trained weights as training starts
    mixes_text: ClassVar[bool] = False  # it adds benign rows to the batches (the loss is then split by row kind)
    penalizes: ClassVar[bool] = False  # it adds `penalty` to the loss

    def __post_init__(self) -> None:
        fixed = next(f.default for f in fields(self) if f.name == "name")
        require(self.name == fixed, f"regularizer.{fixed}.name cannot be set; pick regularizers with regularizer=NAME")

    def prepare(self, model, tokenizer) -> None:
        """Read what it needs from the base model before anything changes it."""

    def adapt(self, model, seed: int) -> None:
        """Change the model in place before training (new units, adapters)."""

    def callbacks(self, params: dict, base: Optional[dict]) -> list:
        return []

    def collator(self, inner, seed: int):
        return inner

    def penalty(self, params: dict, base: Optional[dict]) -> torch.Tensor:
        """The term added to each optimizer step's loss (with `penalizes`)."""
        raise NotImplementedError

    def finish(self, model) -> None:
        """Make the trained model one that plain transformers loads."""

    def key(self) -> dict:
        """What the fine-tune depends on besides the parameters (a file's content)."""
        return {}
