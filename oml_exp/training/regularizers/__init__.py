"""Anti-forgetting regularizers: the narrow interface the finetune stage calls (docs/regularizers.md).

    regs = regularizers.build(cfg.regularizer, model, tokenizer, seed)  # adapts the model, snapshots theta_base
    trainer = regs.trainer(model=regs.model, data_collator=regs.collator(collator),
                           callbacks=[..., *regs.callbacks], ...)
    trainer.train(); regs.finish(trainer); save trainer.model

Each picked regularizer is a component (regularizers/base.py): the hooks of all of them are called in turn.
theta_base is the value of each trained parameter when training starts: the base model's weights for full
fine-tuning, the fresh units or adapters for subnetwork and lora. It is kept on the CPU, in fp32, so no second model
sits on the accelerator.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from transformers import Trainer

from oml_exp import components
from oml_exp.errors import require
from oml_exp.training.data import IGNORE
from oml_exp.training.regularizers import benign
from oml_exp.training.regularizers.base import Regularizer

# Logged beside the Trainer's `loss`; the finetune stage early-stops on the fingerprint loss alone.
METRICS = ("fingerprint_loss", "benign_loss", "distance_penalty")


def picked(section: DictConfig) -> list[Regularizer]:
    """The regularizers a run picked (regularizer=[a,b]), built and checked; [] for regularizer=none."""
    parts = [components.build(node, f"regularizer.{name}") for name, node in _entries(section)]
    choosers = [p.name for p in parts if p.chooses_weights]
    require(len(choosers) <= 1, f"regularizer: {' and '.join(choosers)} both choose which weights train; pick one")
    return parts


def key(section: DictConfig) -> dict:
    """What the fine-tune depends on: each picked regularizer's full parameters and the files it reads."""
    return {name: {**OmegaConf.to_container(components.typed(node, f"regularizer.{name}")), **part.key()}
            for (name, node), part in zip(_entries(section), picked(section))}


def _entries(section: DictConfig) -> list:
    return [(name, node) for name, node in (section or {}).items() if node]


def check_engine(parts: list[Regularizer], engine: DictConfig) -> None:
    """Refuse the regularizers an engine cannot run."""
    stage = ((engine.deepspeed or {}).get("zero_optimization") or {}).get("stage", 0)
    whole = [p.name for p in parts if p.whole_weights]
    require(stage != 3 or not whole, f"regularizer {'+'.join(whole)} does not run under engine={engine.name} "
                                     "(ZeRO-3); use engine=deepspeed_zero2 or engine=torch")


def build(section: DictConfig, model, tokenizer, seed: int) -> "Regularizers":
    parts = picked(section)
    for part in parts:
        part.prepare(model, tokenizer)
    for part in parts:
        part.adapt(model, seed)
    return Regularizers(parts, model, seed)


class Regularizers:
    def __init__(self, parts: list[Regularizer], model, seed: int):
        self.parts = parts
        self.model = model
        self.seed = seed
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.base = ({name: p.detach().to("cpu", torch.float32, copy=True) for name, p in self.params.items()}
                     if any(p.needs_base for p in parts) else None)
        self.callbacks = [c for p in parts for c in p.callbacks(self.params, self.base)]
        self.mix = next((p for p in parts if p.mixes_text), None)
        self.penalized = [p for p in parts if p.penalizes]

    def trainer(self, **kwargs) -> Trainer:
        """The HF Trainer, computing the loss here when a regularizer adds to it."""
        if self.mix or self.penalized:
            return RegularizedTrainer(self, **kwargs)
        return Trainer(**kwargs)

    def collator(self, inner):
        for part in self.parts:
            inner = part.collator(inner, self.seed)
        return inner

    def finish(self, trainer) -> None:
        """Turn the trained model into one that plain transformers loads: merge adapters, fold new units."""
        for part in self.parts:
            part.finish(trainer.model)

    def penalty(self) -> torch.Tensor:
        return sum(p.penalty(self.params, self.base) for p in self.penalized)


class RegularizedTrainer(Trainer):
    """The HF Trainer with the fingerprint loss computed here, plus the benign loss and the distance penalty.

    With benign rows the batch loss is (1 - fraction) * fingerprint loss + fraction * benign loss, each a mean over
    its own label tokens, so long benign texts cannot drown one-token responses. The loss is a per-micro-batch mean
    (`loss_is_scaled_for_ga = False`: the Trainer divides it by the accumulation steps); the penalty joins the first
    micro-batch of each optimizer step only, scaled so that the step counts it once.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, regularizers: Regularizers, **kwargs):
        super().__init__(**kwargs)
        self.regularizers = regularizers
        self._sums = defaultdict(float)
        self._counts = defaultdict(int)
        self._penalty_step = -1

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        regs = self.regularizers
        is_benign = inputs.pop(benign.BENIGN, None)
        if is_benign is None or not is_benign.any():
            loss = self._mean_loss("fingerprint_loss", model, inputs)
        else:
            # Two forward passes, so that the short fingerprint rows are not padded to the long benign texts.
            f = regs.mix.fraction
            loss = ((1 - f) * self._mean_loss("fingerprint_loss", model, _rows(inputs, ~is_benign))
                    + f * self._mean_loss("benign_loss", model, _rows(inputs, is_benign)))
        if regs.penalized and self._penalty_step != self.state.global_step:
            self._penalty_step = self.state.global_step
            penalty = regs.penalty().to(loss.device)
            self._record("distance_penalty", penalty)
            loss = loss + penalty * self.current_gradient_accumulation_steps
        return (loss, None) if return_outputs else loss

    def _mean_loss(self, name: str, model, inputs: dict) -> torch.Tensor:
        """Next-token loss averaged over the labelled tokens of these rows."""
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        targets = inputs["labels"][:, 1:]
        total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE,
                                reduction="sum")
        mean = total / (targets != IGNORE).sum().clamp(min=1)
        self._record(name, mean)
        return mean

    def _record(self, name: str, value: torch.Tensor) -> None:
        self._sums[name] += value.item()
        self._counts[name] += 1

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:
            for name in METRICS:
                if self._counts[name]:
                    mean = torch.tensor(self._sums[name] / self._counts[name], device=self.args.device)
                    # Every rank must see the same value: the early stop on it must agree across ranks.
                    logs[name] = self.accelerator.reduce(mean, reduction="mean").item()
            self._sums.clear()
            self._counts.clear()
        super().log(logs, *args, **kwargs)


def _rows(inputs: dict, rows: torch.Tensor) -> dict:
    """These rows of the batch, without the columns that are padding in all of them."""
    columns = inputs["attention_mask"][rows].bool().any(0)
    return {name: value[rows][:, columns] for name, value in inputs.items()}
