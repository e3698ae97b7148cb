"""What every attack is: a component (its YAML names the class by `_target_`) that turns the model it is given into
an attacked model folder, the way a model thief changes a model before deploying it.

    attack.apply(ctx) -> dict      write the attacked model (weights + tokenizer) into ctx.out; return its summary
    attack.strength() -> dict      how hard it hit: {"measure": "tokens" | "weight" | "bits" | "fraction", "value": x}
    attack.partner() -> Attack     an attack to run on the base model first, whose output ctx.partner then names
                                   (a merge with another fine-tune of the same base); None for most
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import torch
from omegaconf import DictConfig

from oml_exp import models


@dataclass
class Context:
    source: str  # the model spec attacked: the fine-tuned folder, or model.path when nothing was fine-tuned
    base: str  # model.path: the model before fingerprinting (a distillation's student, a merge's base)
    out: Path  # the folder the attacked model goes to
    device: torch.device
    dtype: torch.dtype  # the run's precision: training computes in it, the model is stored in it
    seed: int
    engine: DictConfig  # the finetune stage's engine section: attacks that train use the same engines
    partner: Optional[str] = None  # the partner attack's model folder (see Attack.partner)
    verbose: int = 0  # the run's verbosity: the Trainer's own logging


@dataclass
class Attack:
    name: str = "attack"
    # The attack trains (its result depends on the engine and the seed's data order).
    trains: ClassVar[bool] = False

    def apply(self, ctx: Context) -> dict:
        raise NotImplementedError

    def strength(self) -> dict:
        raise NotImplementedError

    def partner(self) -> Optional["Attack"]:
        return None

    def check(self, base: str, engine: DictConfig) -> None:
        """Refuse, before any stage runs, what this attack cannot do to models like `base` on `engine`; ConfigError
        naming the fix."""


def save(model, tokenizer, folder: Path, dtype: torch.dtype) -> None:
    """The attacked model as every stage loads a model: plain transformers weights and the tokenizer."""
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def load(spec: str, ctx: Context):
    """A model to attack, in fp32 on the run's device (training keeps fp32 master weights, as finetune does)."""
    return models.load(spec, str(ctx.device), "float32")
