"""Weight averaging toward theta_base, applied to the weights the optimizer holds.

Under DeepSpeed the optimizer steps an fp32 master copy (ZeRO-1/2: this rank's flat partition, ZeRO-3: each
parameter's partition) and copies it into the module weights after every step, so averaging only the module weights
would be overwritten at the next step. Here the master copy is averaged first, then copied into the module weights
the way DeepSpeed itself does, so every averaging shapes the rest of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from oml_exp.errors import require
from oml_exp.training.batching import epoch_steps
from oml_exp.training.regularizers.base import Regularizer


@dataclass
class Averaging(Regularizer):
    """After every averaging, each trained parameter becomes (1 - strength) theta + strength theta_base."""

    name: str = "averaging"
    strength: float = 0.05  # the reference's lambda (0.75 there, per epoch of many steps): 0 = off, 1 = undo
    every: Optional[int] = None  # optimizer steps between averagings; null = once per epoch's worth of steps

    needs_base = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.strength <= 1.0, f"regularizer.averaging.strength must lie in [0, 1], got {self.strength}")
        require(self.every is None or self.every >= 1,
                f"regularizer.averaging.every must be >= 1 or null (each epoch), got {self.every}")

    def callbacks(self, params: dict, base: Optional[dict]) -> list:
        return [Callback(params, base, self.strength, self.every)]


class Callback(TrainerCallback):
    """Averages after every `every` optimizer steps; null = once per epoch's worth of steps (the Trainer's count,
    which also steps at each epoch's end).

    Defined on steps, not epochs, so a stop that ends training mid-epoch (on loss or recall) simply leaves the steps
    since the last averaging unaveraged: no extra averaging at the stop, whose check (recall) judged the weights as
    they are. It acts at step end, before the Trainer writes a checkpoint, so a resumed run holds the averaged weights.
    """

    def __init__(self, params: dict, base: dict, strength: float, every: Optional[int]):
        self.params = params
        self.base = base
        self.strength = strength
        self.every = every

    def on_train_begin(self, args, state, control, **kwargs):
        self.period = self.every or epoch_steps(args, state)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if state.global_step % self.period == 0:
            average(self.params, self.base, self.strength, optimizer)


@torch.no_grad()
def average(params: dict, base: dict, strength: float, optimizer) -> None:
    """theta <- (1 - strength) theta + strength theta_base on the optimizer's weights, then on the module's."""
    for name, p in params.items():
        if hasattr(p, "ds_id"):
            _average_zero3(p, base[name], strength)
        elif hasattr(p, "_hp_mapping"):
            _average_fragment(p, base[name], strength)
        else:  # the optimizer steps the module weights themselves
            p.mul_(1 - strength).add_(base[name].to(p), alpha=strength)
    # accelerate wraps the optimizer; ZeRO-1/2 (and DeepSpeed's bf16 optimizer) then copy their master partitions
    # into the module weights and all-gather them across ranks.
    zero = getattr(optimizer, "optimizer", optimizer)
    if hasattr(zero, "update_lp_params"):
        zero.update_lp_params()


def _average_fragment(p, base: torch.Tensor, strength: float) -> None:
    """ZeRO-1/2: the part of this parameter that lies in this rank's fp32 partition, if any."""
    mapping = p._hp_mapping
    if mapping is None:
        return
    master = mapping.get_hp_fragment()
    where = mapping.lp_fragment_address
    master.mul_(1 - strength).add_(base.flatten().narrow(0, where.start, where.numel).to(master), alpha=strength)


def _average_zero3(p, base: torch.Tensor, strength: float) -> None:
    """ZeRO-3: this rank's partition of the fp32 master weight, then of the module weight (p.ds_tensor)."""
    from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

    master = safe_get_local_fp32_param(p)
    size = master.numel()
    start = dist.get_rank(group=p.ds_process_group) * size
    part = torch.zeros(size, dtype=master.dtype)
    # The last partition is padded beyond the weight's end; the padding is never read.
    flat = base.flatten()[start:start + size]
    part[:flat.numel()] = flat
    master.mul_(1 - strength).add_(part.to(master.device), alpha=strength)
    safe_set_local_fp32_param(p, master)
    p.ds_tensor.data.copy_(master.view_as(p.ds_tensor))
