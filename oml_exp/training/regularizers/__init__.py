"""Anti-forgetting regularizers: the narrow interface the finetune stage calls (docs/regularizers.md).

    regs = regularizers.build(cfg, model, tokenizer)   # prepares the model in place, snapshots theta_base
    trainer = regs.trainer(model=regs.model, data_collator=regs.collator(collator),
                           callbacks=[..., *regs.callbacks], ...)
    trainer.train(); regs.finish(trainer); save trainer.model

theta_base is the value of each trained parameter when training starts: the base model's weights for full
fine-tuning, the fresh units or adapters for subnetwork and lora. It is kept on the CPU, in fp32, so no second model
sits on the accelerator.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from transformers import Trainer

from oml_exp.config import check_engine
from oml_exp.training.data import IGNORE
from oml_exp.training.regularizers import averaging, benign, distance, lora, subnetwork

# Logged beside the Trainer's `loss`; the finetune stage early-stops on the fingerprint loss alone.
METRICS = ("fingerprint_loss", "benign_loss", "distance_penalty")


def build(cfg: DictConfig, model, tokenizer) -> "Regularizers":
    reg = cfg.regularizer
    check_engine(cfg.engine, reg)  # also checked at start (config.validate); here for direct callers
    texts = benign.texts(reg.benign_mix, model, tokenizer) if reg.benign_mix else None
    if reg.subnetwork:
        subnetwork.prepare(model, reg.subnetwork, cfg.seed)
    if reg.lora:
        lora.prepare(model, reg.lora, cfg.seed)
    return Regularizers(cfg, model, texts)


class Regularizers:
    def __init__(self, cfg: DictConfig, model, texts: list[dict] | None):
        reg = cfg.regularizer
        self.model = model
        self.reg = reg
        self.seed = cfg.seed
        self.texts = texts
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.base = ({name: p.detach().to("cpu", torch.float32, copy=True) for name, p in self.params.items()}
                     if reg.averaging or reg.distance else None)
        self.callbacks = [averaging.Callback(self.params, self.base, reg.averaging)] if reg.averaging else []

    def trainer(self, **kwargs) -> Trainer:
        """The HF Trainer, computing the loss here when a regularizer adds to it."""
        if self.reg.benign_mix or self.reg.distance:
            return RegularizedTrainer(self, **kwargs)
        return Trainer(**kwargs)

    def collator(self, inner):
        if not self.reg.benign_mix:
            return inner
        return benign.MixingCollator(inner, self.texts, self.reg.benign_mix.fraction, self.seed)

    def finish(self, trainer) -> None:
        """Turn the trained model into one that plain transformers loads: merge adapters, fold new units."""
        if self.reg.subnetwork:
            subnetwork.fold(trainer.model)
        if self.reg.lora:
            lora.merge(trainer.model)

    def penalty(self) -> torch.Tensor:
        return self.reg.distance.beta * distance.squared(self.params, self.base)


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
            f = regs.reg.benign_mix.fraction
            loss = ((1 - f) * self._mean_loss("fingerprint_loss", model, _rows(inputs, ~is_benign))
                    + f * self._mean_loss("benign_loss", model, _rows(inputs, is_benign)))
        if regs.reg.distance and self._penalty_step != self.state.global_step:
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
