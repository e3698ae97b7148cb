"""The finetune stage: embed the fingerprints by fine-tuning on their token ids with the HF Trainer.

Recipe: cross-entropy on the response tokens only, AdamW with weight decay, linear decay from the full learning rate
at the first step (no zero-lr warm-up steps), gradient accumulation over the whole set by default (one optimizer step
per epoch), early stop once a step's fingerprint loss falls below `train.early_stop_loss`.

Under a launcher (torchrun, `deepspeed --no_local_rank`) every rank calls `run` with the same `out`: all ranks train
and write their own DeepSpeed checkpoint shards there, only rank 0 writes the model and the stage files.
A checkpoint left in `out/checkpoints` by a killed run is resumed from.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback, TrainingArguments
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from oml_exp import distributed, models
from oml_exp.fingerprints import schema
from oml_exp.store import file_digest, write_json, write_jsonl
from oml_exp.training import augmentation, data, engines, regularizers

# The pipeline keeps a killed build's folder (its checkpoints) and runs this stage on every rank of a launcher.
RESUMABLE = True
DISTRIBUTED = True
CHECKPOINTS = "checkpoints"
# Where and how often checkpoints are written never changes the trained weights.
NOT_IN_MODEL = ("checkpoint_every", "keep_checkpoints")


def key(cfg: DictConfig) -> dict:
    templates = augmentation.path(cfg)
    return {
        "train": {k: v for k, v in _plain(cfg.train).items() if k not in NOT_IN_MODEL},
        "engine": _plain(cfg.engine),
        "regularizer": _plain(cfg.regularizer),
        "augmentation": _plain(cfg.augmentation),
        "templates": file_digest(templates) if templates and cfg.augmentation.fraction > 0 else None,
        "fingerprints": {k: cfg.fingerprints[k] for k in ("num", "key_length", "chat_template")},
        "seed": cfg.seed,
        "dtype": str(_dtype(cfg)),
    }


def run(cfg: DictConfig, inputs, out: Path, callbacks: tuple = ()) -> dict:
    """Train into `out`; `callbacks` (extra TrainerCallbacks) let benchmarks watch the run."""
    out = Path(out)
    device, dtype = models.pick_device(cfg.device), _dtype(cfg)
    ds = engines.deepspeed_config(cfg, device, dtype)
    # Mixed precision keeps fp32 master weights: load fp32, compute in bf16 (the Trainer's autocast or DeepSpeed).
    model, tokenizer = models.load(inputs.model, cfg.device, "float32")
    regs = regularizers.build(cfg, model, tokenizer)  # adapts the model in place (subnetwork, lora)
    dataset, truncated = _dataset(cfg, tokenizer, schema.load(inputs.fingerprints, cfg.fingerprints.num))
    collator = data.Collator(tokenizer.pad_token_id, tokenizer.padding_side)
    args = arguments(cfg, out / CHECKPOINTS, len(dataset), device, dtype, ds)
    resume = _last_checkpoint(out / CHECKPOINTS)
    start = time.time()
    try:
        trainer = regs.trainer(model=regs.model, args=args, train_dataset=dataset,
                               data_collator=regs.collator(collator),
                               callbacks=[_Control(dataset, cfg.train.early_stop_loss), *regs.callbacks, *callbacks])
        trainer.train(resume_from_checkpoint=resume)
        seconds = time.time() - start
        regs.finish(trainer)
        _save_model(trainer, tokenizer, out / "model", dtype)
    finally:
        # The Trainer leaves ZeRO-3 switched on process-wide: later from_pretrained calls (the check stage) would
        # build empty, partitioned models.
        unset_hf_deepspeed_config()
    summary = _summary(cfg, trainer, collator, seconds, truncated, resume, dtype)
    if distributed.is_main():
        _write_stage_files(cfg, out, dataset, trainer, summary, args)
        _print(summary)
    return summary


def _dataset(cfg: DictConfig, tokenizer, rows: list[dict]) -> tuple[data.FingerprintDataset, int]:
    fp = cfg.fingerprints
    items, truncated = data.pairs(rows, fp.key_length, tokenizer.eos_token_id if cfg.train.eos else None)
    if truncated:
        print(f"[finetune] {truncated} of {len(rows)} keys were longer than fingerprints.key_length={fp.key_length}"
              " tokens and were truncated to it")
    dataset = data.FingerprintDataset(tokenizer, items, fp.chat_template, augmentation.load(cfg),
                                      cfg.augmentation.fraction, cfg.seed)
    return dataset, truncated


def _print(summary: dict) -> None:
    print(f"[finetune] {summary['steps']} optimizer steps over {summary['epochs']} epochs, final fingerprint loss "
          f"{summary['final_loss']:.4g}{' (early stop)' if summary['early_stopped'] else ''}, "
          f"{summary['seconds']} s, {summary['tokens_per_s']} tokens/s, padding {summary['padding_waste']:.0%}")


def arguments(cfg: DictConfig, folder: Path, n: int, device: torch.device, dtype: torch.dtype, ds: dict | None):
    t = cfg.train
    batches = math.ceil(n / (t.batch_size * distributed.world_size()))  # micro-batches per process per epoch
    accum = batches if t.grad_accum == "all" else int(t.grad_accum)
    steps_per_epoch = math.ceil(batches / accum)
    return TrainingArguments(
        output_dir=str(folder),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=accum,
        num_train_epochs=t.epochs,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="steps" if t.checkpoint_every else "no",
        save_steps=max(1, t.checkpoint_every * steps_per_epoch),
        save_total_limit=max(1, t.keep_checkpoints),
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        activation_checkpointing=t.gradient_checkpointing,
        deepspeed=ds,
        use_cpu=device.type == "cpu",
        ddp_backend="gloo" if device.type == "cpu" and distributed.world_size() > 1 else None,
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        report_to="none",
        disable_tqdm=not distributed.is_main(),
        log_level="warning",
        log_level_replica="error",
    )


class _Control(TrainerCallback):
    """Sets the dataset's epoch (it draws augmentation templates per epoch) and stops early on a low loss.

    The logged loss is already averaged over all ranks, so every rank takes the same decision.
    """

    def __init__(self, dataset: data.FingerprintDataset, threshold: float):
        self.dataset = dataset
        self.threshold = threshold

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(round(state.epoch or 0))

    def on_log(self, args, state, control, logs=None, **kwargs):
        # With benign text or a distance penalty in the loss, only its fingerprint part can fall to the threshold.
        if logs and logs.get("fingerprint_loss", logs.get("loss", math.inf)) < self.threshold:
            control.should_training_stop = True


def _save_model(trainer, tokenizer, folder: Path, dtype: torch.dtype) -> None:
    if not trainer.is_deepspeed_enabled:
        trainer.model.to(dtype)  # the fp32 master weights, stored at the run's precision
    trainer.save_model(str(folder))  # every rank calls it: ZeRO-3 gathers the shards, rank 0 writes
    if distributed.is_main():
        tokenizer.save_pretrained(folder)


def _summary(cfg, trainer, collator, seconds, truncated, resume, dtype) -> dict:
    state = trainer.state
    # The fingerprint part of the loss when a regularizer adds to it (the early stop watches the same value).
    losses = [e.get("fingerprint_loss", e["loss"]) for e in state.log_history if "loss" in e]
    return {
        "fingerprints": cfg.fingerprints.num,
        "steps": state.global_step,
        "epochs": math.ceil(state.epoch or 0),
        "final_loss": losses[-1] if losses else None,
        "early_stopped": bool(losses) and losses[-1] < cfg.train.early_stop_loss,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(collator.tokens * distributed.world_size() / seconds, 1) if seconds else None,
        "padding_waste": round(1 - collator.tokens / collator.positions, 4) if collator.positions else 0.0,
        "truncated_keys": truncated,
        "resumed_from_step": int(Path(resume).name.split("-")[-1]) if resume else None,
        "engine": cfg.engine.name,
        "processes": distributed.world_size(),
        "dtype": str(dtype).removeprefix("torch."),
    }


def _write_stage_files(cfg, out: Path, dataset, trainer, summary: dict, args) -> None:
    write_json(out / "config.json", {"config": _plain(cfg), "training_arguments": args.to_dict()})
    write_json(out / "train_set.json", _train_set(dataset), secret=True)
    logged = ("step", "epoch", "loss", *regularizers.METRICS, "learning_rate", "grad_norm")
    write_jsonl(out / "log.jsonl", [{k: e[k] for k in logged if k in e}
                                    for e in trainer.state.log_history if "loss" in e])
    _prune_checkpoints(out / CHECKPOINTS, cfg.train.keep_checkpoints)


def _train_set(dataset: data.FingerprintDataset) -> list[dict]:
    """Each example as trained, in its plain form (augmented runs wrap the prompt in a template per epoch)."""
    prefix, suffix = dataset.plain
    return [{"prompt_ids": prefix + p.key_ids + suffix, "key_ids": p.key_ids, "response_ids": p.response_ids}
            for p in dataset.items]


def _prune_checkpoints(folder: Path, keep: int) -> None:
    if not folder.exists():
        return
    for old in _checkpoints(folder)[:-keep or None]:
        shutil.rmtree(old)
    if not any(folder.iterdir()):
        folder.rmdir()


def _checkpoints(folder: Path) -> list[Path]:
    found = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _last_checkpoint(folder: Path) -> str | None:
    found = _checkpoints(folder) if folder.exists() else []
    return str(found[-1]) if found else None


def _dtype(cfg: DictConfig) -> torch.dtype:
    return models.pick_dtype(cfg.model.dtype, models.pick_device(cfg.device))


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)
