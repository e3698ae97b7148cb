"""The attack stage: one attack (an entry of the `attack` section) applied to the run's model, into `model/`.

Each attacked model is a store entry keyed by the model it attacked (the pipeline adds its identity) and the
attack's full parameters; the pipeline then checks and evaluates it as it does the fingerprinted model. A merge
whose partner is another fine-tune of the base gets that model from an attack entry of its own on the base model
(`partner` in its upstream folders). The summary says how hard the attack hit (strength) and how far the weights
moved (weight_change: relative L2 distance from the attacked model's weights, and the share of entries changed).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from oml_exp import components, distributed, models
from oml_exp.attacks.base import Attack, Context

log = logging.getLogger(__name__)
# Training attacks run on every rank of a launcher, as the finetune stage does; the others only on rank 0.
DISTRIBUTED = True
MODEL = "model"


def entries(section: DictConfig) -> list[tuple[str, DictConfig]]:
    """The attacks a run picked (attack=[sft,prune]), by name; [] for attack=none."""
    return [(name, node) for name, node in (section or {}).items() if node]


def picked(section: DictConfig) -> list[Attack]:
    return [components.build(node, f"attack.{name}") for name, node in entries(section)]


def one(cfg: DictConfig, name: str, node: DictConfig) -> DictConfig:
    """The run config with the attack section narrowed to one attack: what this stage's key and run read."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.attack = {name: node}
    return cfg


def partner(node: DictConfig, name: str) -> DictConfig | None:
    """The attack to run on the base model first for this one (a merge partner), as a config node; or None."""
    found = components.build(node, f"attack.{name}").partner()
    if found is None:
        return None
    return OmegaConf.create({components.TARGET: f"{type(found).__module__}.{type(found).__qualname__}",
                             **dataclasses.asdict(found)})


def key(cfg: DictConfig) -> dict:
    (name, node), = entries(cfg.attack)
    attack = components.build(node, f"attack.{name}")
    device = models.pick_device(cfg.device)
    return {
        "attack": OmegaConf.to_container(components.typed(node, f"attack.{name}")),
        "dtype": str(models.pick_dtype(cfg.model.dtype, device)),
        # Only what trains depends on the engine and the seed (data order, dropout-free but shuffled).
        "engine": OmegaConf.to_container(cfg.engine, resolve=True) if attack.trains else None,
        "seed": cfg.seed if attack.trains else None,
    }


def run(cfg: DictConfig, inputs, out: Path) -> dict:
    (name, node), = entries(cfg.attack)
    attack = components.build(node, f"attack.{name}")
    device = models.pick_device(cfg.device)
    upstream = inputs.upstream.get("partner")
    ctx = Context(source=inputs.model, base=inputs.base_model, out=Path(out) / MODEL, device=device,
                  dtype=models.pick_dtype(cfg.model.dtype, device), seed=cfg.seed, engine=cfg.engine,
                  partner=str(Path(upstream) / MODEL) if upstream else None, verbose=cfg.verbose)
    if not (attack.trains or distributed.is_main()):
        return {}
    summary = {"attack": name, "kind": type(attack).__name__.lower(), "strength": attack.strength(),
               **attack.apply(ctx)}
    if distributed.is_main():
        summary["weight_change"] = weight_change(inputs.model, ctx.out)
        log.info("[attack] %s: weights moved %.2f%% (L2), %.1f%% of entries changed", name,
                 100 * summary["weight_change"]["relative_l2"], 100 * summary["weight_change"]["changed"])
    return summary


@torch.no_grad()
def weight_change(before: str, after: Path) -> dict:
    """How far the attack moved the weights: ||after - before|| / ||before|| over every parameter the two share by
    name and shape, and the share of entries that changed."""
    old, _ = models.load(before, "cpu", "float32")
    new, _ = models.load(str(after), "cpu", "float32")
    theirs = dict(new.named_parameters())
    diff = norm = changed = total = 0.0
    for name, p in old.named_parameters():
        q = theirs.get(name)
        if q is None or q.shape != p.shape:
            continue
        delta = q - p
        diff += float(delta.square().sum())
        norm += float(p.square().sum())
        changed += int((delta != 0).sum())
        total += p.numel()
    return {"relative_l2": round((diff / norm) ** 0.5, 6) if norm else None,
            "changed": round(changed / total, 6) if total else None}
