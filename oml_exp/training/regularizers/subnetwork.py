"""Sub-network training: new MLP units train, the original weights stay frozen.

Each gated MLP, down(act(gate(x)) * up(x)), gets `extra` new units computed beside it by separate small layers, so
the originals can be frozen outright (bitwise unchanged: no optimizer ever holds them) instead of being reset after
every step. The new down-projection starts at zero, so training starts from the base model's function. `fold`
concatenates the new units into the original matrices: the saved model is the same architecture with a larger
intermediate size, which plain transformers loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from oml_exp.errors import ConfigError, require
from oml_exp.training.regularizers.base import Regularizer


@dataclass
class Subnetwork(Regularizer):
    """Widen every MLP by `fraction` new units and train only those; or, with fraction 0, train only `layers`."""

    name: str = "subnetwork"
    fraction: float = 0.1  # new units per MLP, as a share of its intermediate size
    layers: Optional[list] = None  # indices of the decoder layers that train; null = all

    whole_weights = True
    chooses_weights = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.fraction >= 0, f"regularizer.subnetwork.fraction must be >= 0, got {self.fraction}")
        require(self.fraction > 0 or bool(self.layers),
                "regularizer.subnetwork needs fraction > 0 (new MLP units) or a list of layers to train")

    def adapt(self, model, seed: int) -> None:
        prepare(model, self.fraction, self.layers, seed)

    def finish(self, model) -> None:
        fold(model)


class WidenedMLP(nn.Module):
    def __init__(self, mlp: nn.Module, extra: int, generator: torch.Generator):
        super().__init__()
        self.mlp = mlp
        self.gate = _new_units(mlp.gate_proj, extra, generator)
        self.up = _new_units(mlp.up_proj, extra, generator)
        down = mlp.down_proj
        self.down = nn.Linear(extra, down.out_features, bias=False, device=down.weight.device, dtype=down.weight.dtype)
        nn.init.zeros_(self.down.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + self.down(self.mlp.act_fn(self.gate(x)) * self.up(x))


def prepare(model: nn.Module, fraction: float, trained: Optional[list], seed: int) -> None:
    """Freeze the model; widen every MLP and unfreeze the new units of the chosen layers (or, with fraction 0, the
    chosen layers themselves)."""
    layers = model.get_decoder().layers
    chosen = range(len(layers)) if trained is None else list(trained)
    bad = [i for i in chosen if not 0 <= i < len(layers)]
    if bad:
        raise ConfigError(f"regularizer.subnetwork.layers: {bad} out of range; the model has {len(layers)} layers")
    model.requires_grad_(False)
    if fraction == 0:
        for i in chosen:
            layers[i].requires_grad_(True)
        return
    extra = max(1, round(model.config.intermediate_size * fraction))
    generator = torch.Generator().manual_seed(seed)
    for i, layer in enumerate(layers):
        if not all(hasattr(layer.mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            raise ConfigError("regularizer.subnetwork widens gated MLPs (gate_proj, up_proj, down_proj: Llama, "
                              f"Mistral, Gemma, Qwen); {type(layer.mlp).__name__} is not one; use regularizer=lora")
        layer.mlp = WidenedMLP(layer.mlp, extra, generator)
        # Every layer is widened, so one intermediate size fits all; unchosen layers keep a zero down-projection.
        layer.mlp.requires_grad_(False)
        if i in chosen:
            for part in (layer.mlp.gate, layer.mlp.up, layer.mlp.down):
                part.requires_grad_(True)


def fold(model: nn.Module) -> None:
    """Concatenate the new units into the original matrices, in place."""
    extra = 0
    for layer in model.get_decoder().layers:
        wide = layer.mlp
        if not isinstance(wide, WidenedMLP):
            return  # fraction 0: nothing was widened
        mlp, extra = wide.mlp, wide.down.in_features
        mlp.gate_proj = _concat(mlp.gate_proj, wide.gate, dim=0)
        mlp.up_proj = _concat(mlp.up_proj, wide.up, dim=0)
        mlp.down_proj = _concat(mlp.down_proj, wide.down, dim=1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size += extra
        layer.mlp = mlp
    model.config.intermediate_size += extra


def _new_units(proj: nn.Linear, extra: int, generator: torch.Generator) -> nn.Linear:
    """`extra` new output rows, drawn at the scale of the original rows so the new units are as active."""
    new = nn.Linear(proj.in_features, extra, bias=proj.bias is not None, device=proj.weight.device,
                    dtype=proj.weight.dtype)
    with torch.no_grad():
        scale = proj.weight.float().std()
        new.weight.copy_(torch.randn(new.weight.shape, generator=generator) * scale)
        if new.bias is not None:
            new.bias.zero_()
    return new


@torch.no_grad()
def _concat(old: nn.Linear, new: nn.Linear, dim: int) -> nn.Linear:
    weight = torch.cat([old.weight, new.weight.to(old.weight)], dim=dim)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=old.bias is not None, device=weight.device,
                    dtype=weight.dtype)
    out.weight.copy_(weight)
    if old.bias is not None:
        # Row-wise concatenation adds biases for the new rows; a column-wise one keeps the output bias.
        out.bias.copy_(torch.cat([old.bias, new.bias.to(old.bias)]) if dim == 0 else old.bias)
    return out
