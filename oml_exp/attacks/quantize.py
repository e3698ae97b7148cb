"""quantize: weight-only int8 or int4 quantization with optimum-quanto, the way models are shrunk for deployment.

The attacked model is stored dequantized: each quantized weight as the values the quantized model computes with
(int codes times their scales), at the run's precision, so every stage loads it as it loads any model and sees
what the quantized model serves (weight-only quantization dequantizes on the fly; tests/test_attacks.py shows the
stored model's logits equal the quantized model's). The output layer stays in full precision, as deployments
usually keep it (it is often tied to the embeddings).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from oml_exp.attacks.base import Attack, Context, load, save
from oml_exp.errors import require

BITS = (8, 4)


@dataclass
class Quantize(Attack):
    name: str = "quantize"
    bits: int = 8

    def __post_init__(self) -> None:
        require(self.bits in BITS, f"attack.{self.name}.bits={self.bits} is not one of {BITS}")

    def strength(self) -> dict:
        return {"measure": "bits", "value": self.bits}

    def apply(self, ctx: Context) -> dict:
        model, tokenizer = load(ctx.source, ctx)
        plain = copy.deepcopy(model)
        weights = dequantized(quantized(model, self.bits))
        plain.load_state_dict(weights, strict=False)
        save(plain, tokenizer, ctx.out, ctx.dtype)
        return {"library": "optimum-quanto", "stored": "dequantized", "quantized_layers": len(weights)}


def quantized(model, bits: int):
    """`model` with its linear layers' weights quantized in place (the output layer excluded), as served."""
    from optimum.quanto import freeze, qint4, qint8, quantize

    head = next(name for name, module in model.named_modules() if module is model.get_output_embeddings())
    quantize(model, weights=qint8 if bits == 8 else qint4, exclude=head)
    freeze(model)
    return model


def dequantized(model) -> dict:
    """The quantized weights as plain tensors: what the quantized layers multiply by."""
    return {f"{name}.weight": module.weight.dequantize().float() for name, module in model.named_modules()
            if hasattr(getattr(module, "weight", None), "dequantize")}
