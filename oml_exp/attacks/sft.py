"""sft: supervised fine-tuning on ordinary instruction data, what anyone adapting a model does first.

The data, offline by default, is the base model's own answers to this project's attack prompts (ordinary requests,
disjoint from the drift and benign-mix prompts); or a JSONL file or Hugging Face dataset with Alpaca columns
(instruction, optional input, output). Full fine-tuning or LoRA (merged into the weights afterwards, as a deployed
LoRA fine-tune is).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from oml_exp import base_text, distributed
from oml_exp.attacks import training
from oml_exp.attacks.base import Context, load
from oml_exp.errors import ConfigError, require


@dataclass
class SFT(training.TrainingAttack):
    name: str = "sft"
    # "base": the base model answers the attack prompts; else a JSONL file or a Hugging Face dataset id (Alpaca columns)
    data: str = "base"
    lora: bool = False
    lora_r: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.lora_r >= 1, f"attack.{self.name}.lora_r must be >= 1, got {self.lora_r}")

    def check(self, base: str, engine: DictConfig) -> None:
        zero = ((engine.deepspeed or {}).get("zero_optimization") or {}).get("stage", 0)
        # The adapters are merged on rank 0 after training, which ZeRO-3's partitioned weights do not allow.
        require(not (self.lora and zero == 3), f"attack.{self.name}.lora=true does not run under engine={engine.name} "
                                               "(ZeRO-3); use engine=deepspeed_zero2 or engine=torch")
        if self.data != "base" and _is_file(self.data):
            _alpaca_rows(self.data, limit=1)

    def apply(self, ctx: Context) -> dict:
        model, tokenizer = load(ctx.source, ctx)
        examples = self._examples(ctx, tokenizer)
        if self.lora:
            model = _with_lora(model, self.lora_r)
        trainer, figures = training.train(model, tokenizer, examples, self, ctx)
        if self.lora:
            if distributed.is_main():
                trainer.model.merge_and_unload().to(ctx.dtype).save_pretrained(ctx.out)
                tokenizer.save_pretrained(ctx.out)
        else:
            training.save(trainer, tokenizer, ctx)
        return {**figures, "data": self.data, "lora": self.lora}

    def _examples(self, ctx: Context, tokenizer) -> list[dict]:
        if self.data == "base":
            writer, _ = load(ctx.base, ctx)
            return training.written(writer.to(ctx.dtype), tokenizer, self.response_tokens, self.seq_len)
        rows = _alpaca_rows(self.data) if _is_file(self.data) else _hub_rows(self.data)
        return [training.example(base_text.prompt_ids(tokenizer, prompt),
                                 tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id],
                                 self.seq_len) for prompt, answer in rows]


def _is_file(data: str) -> bool:
    return data.endswith((".jsonl", ".json")) or os.path.exists(data)


def _alpaca_rows(path: str, limit: int | None = None) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of a JSONL file with Alpaca columns; ConfigError naming the file and the fix."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"attack sft data={path!r} is not a file; give a JSONL file of instruction/output rows, a "
                          "Hugging Face dataset id, or data=base")
    rows = []
    with file.open() as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                rows.append(_alpaca(json.loads(line), f"{path}:{number}"))
            if limit and len(rows) >= limit:
                break
    require(rows, f"attack sft data={path!r} holds no rows")
    return rows


def _hub_rows(name: str) -> list[tuple[str, str]]:
    import datasets

    try:
        table = datasets.load_dataset(name, split="train")
    except Exception as err:  # offline, unknown id, or no train split: all mean the same to the user
        raise ConfigError(f"attack sft data={name!r} cannot be loaded from the Hugging Face Hub "
                          f"({str(err).splitlines()[0][:120]}); use a local JSONL file or data=base") from None
    return [_alpaca(row, f"{name} row {i}") for i, row in enumerate(table)]


def _alpaca(row: dict, where: str) -> tuple[str, str]:
    if not isinstance(row, dict) or not {"instruction", "output"} <= row.keys():
        raise ConfigError(f"attack sft data: {where} lacks the Alpaca columns instruction and output")
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return prompt, row["output"]


def _with_lora(model, rank: int):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                            target_modules="all-linear", task_type="CAUSAL_LM"))

