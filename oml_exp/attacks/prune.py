"""prune: magnitude pruning, the smallest `fraction` of each linear layer's weights set to zero (torch's pruning
utilities, made permanent). The output layer is left whole: it is usually the embedding matrix (tied weights)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils import prune

from oml_exp.attacks.base import Attack, Context, load, save
from oml_exp.errors import require


@dataclass
class Prune(Attack):
    name: str = "prune"
    fraction: float = 0.2  # of each linear layer's weights, by magnitude

    def __post_init__(self) -> None:
        require(0 < self.fraction < 1, f"attack.{self.name}.fraction must be in (0, 1), got {self.fraction}")

    def strength(self) -> dict:
        return {"measure": "fraction", "value": self.fraction}

    def apply(self, ctx: Context) -> dict:
        model, tokenizer = load(ctx.source, ctx)
        layers = [m for m in model.modules()
                  if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings()]
        for layer in layers:
            prune.l1_unstructured(layer, "weight", amount=self.fraction)
            prune.remove(layer, "weight")
        zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
        total = sum(layer.weight.numel() for layer in layers)
        save(model, tokenizer, ctx.out, ctx.dtype)
        return {"layers": len(layers), "zeroed": round(zeros / total, 4)}
