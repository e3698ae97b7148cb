"""LoRA through peft: low-rank adapters train, the base weights stay frozen; merged into the saved model.

The adapters are injected into the model in place rather than wrapping it in a PeftModel, so the model the Trainer
and DeepSpeed hold stays the transformers model: once merged, it saves as plain weights under every engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from oml_exp.errors import require
from oml_exp.training.regularizers.base import Regularizer


@dataclass
class Lora(Regularizer):
    """LoRA adapters (peft) trained instead of the weights, merged into the saved model."""

    name: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Any = "all-linear"  # a list of module names, or peft's "all-linear"

    whole_weights = True
    chooses_weights = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rank >= 1, f"regularizer.lora.rank must be >= 1, got {self.rank}")
        require(0.0 <= self.dropout < 1.0, f"regularizer.lora.dropout must lie in [0, 1), got {self.dropout}")

    def adapt(self, model, seed: int) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets)
        # peft draws the adapters' initial values from the global generator: seed it, without disturbing it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject_adapter_in_model(config, model)

    def finish(self, model) -> None:
        merge(model)


@torch.no_grad()
def merge(model) -> None:
    """W + (alpha / rank) B A folded into each adapted weight, and the adapter layers replaced by the plain ones."""
    from peft.tuners.lora import LoraLayer

    adapted = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in adapted:
        module.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, module.get_base_layer())
