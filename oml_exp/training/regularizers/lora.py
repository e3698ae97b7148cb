"""LoRA through peft: low-rank adapters train, the base weights stay frozen; merged into the saved model.

The adapters are injected into the model in place rather than wrapping it in a PeftModel, so the model the Trainer
and DeepSpeed hold stays the transformers model: once merged, it saves as plain weights under every engine.
"""

from __future__ import annotations

import torch


def prepare(model, cfg, seed: int) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets)
    # peft draws the adapters' initial values from the global generator: seed it, without disturbing it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model)


@torch.no_grad()
def merge(model) -> None:
    """W + (alpha / rank) B A folded into each adapted weight, and the adapter layers replaced by the plain ones."""
    from peft.tuners.lora import LoraLayer

    adapted = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in adapted:
        module.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, module.get_base_layer())
