"""merge: the fingerprinted model merged with another model of the same base, with mergekit.

    linear            weight * fingerprinted + (1 - weight) * partner (the partner is the base model by default)
    task_arithmetic   base + weight * (fingerprinted - base) + (1 - weight) * (partner - base)
    ties, dare_ties   the same task vectors, each cut to `density` of its entries first (by magnitude, or at random
                      and rescaled) and signs resolved by TIES

The partner: `base`, `sft` (the sft attack's defaults run on the base model: another fine-tune of the same base, kept
in the store and shared by every run on that base), or any model spec of the same architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig

from oml_exp import models
from oml_exp.attacks.base import Attack, Context
from oml_exp.attacks.sft import SFT
from oml_exp.errors import ConfigError, require

METHODS = ("linear", "task_arithmetic", "ties", "dare_ties")
# What two models must share for their weights to be merged entry by entry.
SHAPE = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "vocab_size")


@dataclass
class Merge(Attack):
    name: str = "merge"
    method: str = "linear"
    weight: float = 0.5  # the fingerprinted model's share; the partner gets 1 - weight
    partner_model: str = "base"  # base | sft | a model spec of the same architecture
    density: float = 0.5  # ties and dare_ties: the share of each task vector kept

    def __post_init__(self) -> None:
        require(self.method in METHODS, f"attack.{self.name}.method={self.method!r} is not one of {', '.join(METHODS)}")
        require(0 < self.weight < 1, f"attack.{self.name}.weight must be in (0, 1), got {self.weight}")
        require(0 < self.density <= 1, f"attack.{self.name}.density must be in (0, 1], got {self.density}")
        require(self.method == "linear" or self.partner_model != "base",
                f"attack.{self.name}: method={self.method} merges task vectors, and the base model's is zero; "
                f"set attack.{self.name}.partner_model=sft (or another fine-tune of the base)")

    def strength(self) -> dict:
        return {"measure": "weight", "value": self.weight, "method": self.method}

    def partner(self) -> Optional[Attack]:
        return SFT(name="partner_sft") if self.partner_model == "sft" else None

    def check(self, base: str, engine: DictConfig) -> None:
        if self.partner_model in ("base", "sft"):
            return
        where = f"attack.{self.name}.partner_model"
        models.check_spec(self.partner_model, where)
        mine, theirs = _shape(base, "model.path"), _shape(self.partner_model, where)
        if mine != theirs:
            differ = ", ".join(f"{k} {mine.get(k)} vs {theirs.get(k)}" for k in SHAPE if mine.get(k) != theirs.get(k))
            raise ConfigError(f"{where}={self.partner_model!r} has another architecture than model.path ({differ}); "
                              "merge with a fine-tune of the same base model")

    def apply(self, ctx: Context) -> dict:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge

        partner = {"base": ctx.base, "sft": ctx.partner}.get(self.partner_model, self.partner_model)
        spec = self._config(models.resolve(ctx.source), models.resolve(partner), models.resolve(ctx.base), ctx)
        run_merge(MergeConfiguration.model_validate(spec), str(ctx.out),
                  options=MergeOptions(copy_tokenizer=False, lazy_unpickle=False, random_seed=ctx.seed,
                                       cuda=ctx.device.type == "cuda"))
        models.load_tokenizer(ctx.source).save_pretrained(ctx.out)
        return {"method": self.method, "partner": partner if self.partner_model != "sft" else "sft of the base model"}

    def _config(self, source: str, partner: str, base: str, ctx: Context) -> dict:
        params = {} if self.method in ("linear", "task_arithmetic") else {"density": self.density}
        spec = {"merge_method": self.method, "dtype": str(ctx.dtype).removeprefix("torch."),
                "models": [{"model": source, "parameters": {"weight": self.weight, **params}},
                           {"model": partner, "parameters": {"weight": round(1 - self.weight, 6), **params}}]}
        if self.method != "linear":
            spec["base_model"] = base
        return spec


def _shape(spec: str, key: str) -> dict:
    found = models.config(spec, key).to_dict()
    return {k: found.get(k) for k in SHAPE}
