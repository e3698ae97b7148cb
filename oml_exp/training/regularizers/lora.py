"""LoRA through peft: low-rank adapters train, the base weights stay frozen; merged into the saved model."""

from __future__ import annotations

import torch


def prepare(model, cfg, seed: int):
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                        task_type="CAUSAL_LM")
    # peft draws the adapters' initial values from the global generator: seed it, without disturbing it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def merge(model):
    """W + (alpha / rank) B A folded into each adapted weight; a plain transformers model again."""
    return model.merge_and_unload()
