"""The squared distance ||theta - theta_base||^2 of the trained parameters, differentiable.

theta_base stays on the CPU: each parameter's base is moved to the accelerator only while its term (forward) or
gradient 2 (theta - theta_base) (backward) is computed, and autograd keeps no difference tensor in between, so no
second copy of the model ever sits on the accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from oml_exp.errors import require
from oml_exp.training.regularizers.base import Regularizer


@dataclass
class Distance(Regularizer):
    """The loss gains beta * ||theta - theta_base||^2, summed over the trained parameters."""

    name: str = "distance"
    beta: float = 0.1

    whole_weights = True
    needs_base = True
    penalizes = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.beta >= 0, f"regularizer.distance.beta must be >= 0, got {self.beta}")

    def penalty(self, params: dict, base: Optional[dict]) -> torch.Tensor:
        return self.beta * squared(params, base)


class _SquaredDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, param: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(param)  # a leaf parameter: saving it copies nothing
        ctx.base = base
        return (param.detach().float() - base.to(param.device)).pow(2).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (param,) = ctx.saved_tensors
        return (2 * grad * (param.float() - ctx.base.to(param.device))).to(param.dtype), None


def squared(params: dict, base: dict) -> torch.Tensor:
    return sum(_SquaredDistance.apply(p, base[name]) for name, p in params.items())
