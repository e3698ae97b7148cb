"""What the attacks that train (sft, distill) share: answers written by a model for ordinary prompts, and a fixed
number of optimizer steps of the HF Trainer on the finetune stage's engines (DeepSpeed too)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

from transformers import Trainer, TrainingArguments
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from oml_exp import base_text, distributed, verbosity
from oml_exp.attacks.base import Attack, Context
from oml_exp.errors import require
from oml_exp.training import engines
from oml_exp.training.data import IGNORE, Collator

# Ordinary requests, disjoint from the drift yardstick and the benign-mix prompts (tests/test_attacks.py), so an
# attack never trains on what measures forgetting.
PROMPTS = "attack_prompts.json"
WRITE_BATCH = 32


@dataclass
class TrainingAttack(Attack):
    """Parameters of an attack that trains; strength is the tokens it trains on (at its learning rate)."""

    steps: int = 40
    batch_size: int = 8
    seq_len: int = 128  # tokens per example at most (prompt + answer)
    lr: float = 2e-5
    response_tokens: int = 96  # how long the written answers are
    trains: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "response_tokens"):
            require(getattr(self, name) >= 1, f"attack.{self.name}.{name} must be >= 1, got {getattr(self, name)}")
        require(self.seq_len >= 8, f"attack.{self.name}.seq_len must be >= 8, got {self.seq_len}")
        require(self.lr > 0, f"attack.{self.name}.lr must be > 0, got {self.lr}")

    def strength(self) -> dict:
        return {"measure": "tokens", "value": self.steps * self.batch_size * self.seq_len, "lr": self.lr}


def prompts() -> list[str]:
    return json.loads(resources.files("oml_exp.data").joinpath(PROMPTS).read_text())


def written(model, tokenizer, new_tokens: int, seq_len: int) -> list[dict]:
    """The attack prompts answered by `model` (greedy, batched), as examples trained on the answer only."""
    return [example(p, a, seq_len) for p, a in base_text.write(model, tokenizer, prompts(), new_tokens, WRITE_BATCH)]


def example(prompt_ids: list[int], answer_ids: list[int], seq_len: int) -> dict:
    return {"input_ids": (prompt_ids + answer_ids)[:seq_len],
            "labels": ([IGNORE] * len(prompt_ids) + answer_ids)[:seq_len]}


def train(model, tokenizer, examples: list[dict], attack: TrainingAttack, ctx: Context, trainer_class=Trainer,
          **extra) -> tuple[Trainer, dict]:
    """`attack.steps` optimizer steps over `examples` (repeated as needed); the trainer and the loss and token
    figures of the run."""
    require(any(IGNORE != label for e in examples for label in e["labels"]),
            f"attack.{attack.name}: no answer token fits in seq_len={attack.seq_len}; raise it")
    ds = engines.deepspeed_config(ctx.engine, ctx.device, ctx.dtype)
    collator = Collator(tokenizer.pad_token_id, "right")
    scratch = Path(ctx.out).parent / "trainer"  # the Trainer's output_dir; nothing is saved there (save_strategy=no)
    try:
        trainer = trainer_class(model=model, args=_arguments(attack, ctx, scratch, ds), train_dataset=examples,
                                data_collator=collator, **extra)
        trainer.train()
    finally:
        unset_hf_deepspeed_config()  # or later from_pretrained calls build ZeRO-3 partitioned models
        shutil.rmtree(scratch, ignore_errors=True)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return trainer, {"steps": trainer.state.global_step, "examples": len(examples),
                     "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                     "tokens": collator.tokens * distributed.world_size()}


def _arguments(attack: TrainingAttack, ctx: Context, folder: Path, ds: dict | None) -> TrainingArguments:
    return TrainingArguments(output_dir=str(folder), per_device_train_batch_size=attack.batch_size,
                             max_steps=attack.steps, learning_rate=attack.lr, save_strategy="no",
                             **engines.trainer_settings(ctx.device, ctx.dtype, ds, ctx.seed,
                                                        verbosity.trainer_log_level(ctx.verbose)))


def save(trainer: Trainer, tokenizer, ctx: Context) -> None:
    """Every rank calls it (ZeRO-3 gathers the shards); rank 0 writes the model at the run's precision."""
    if not trainer.is_deepspeed_enabled:
        trainer.model.to(ctx.dtype)
    trainer.save_model(str(ctx.out))
    if distributed.is_main():
        tokenizer.save_pretrained(ctx.out)
