"""The finetune stage: embed the fingerprints by fine-tuning on their token ids with the HF Trainer.

Recipe: cross-entropy on the response tokens only, AdamW with weight decay (fused on CUDA), linear decay from the
full learning rate at the first step (no zero-lr warm-up steps), `train.fingerprints_per_step` fingerprints per
optimizer step (null: the whole set, one step per epoch), early stop once `train.stop_recall` of the training set is
recalled (checked every `train.recall_every` steps) or, without a recall target, once a step's fingerprint loss falls
below `train.early_stop_loss`.

Under a launcher (torchrun, `deepspeed --no_local_rank`) every rank calls `run` with the same `out`: all ranks train
and write their own DeepSpeed checkpoint shards there, only rank 0 writes the model and the stage files.
A checkpoint left in `out/checkpoints` by a killed run is resumed from.
"""

from __future__ import annotations

import inspect
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from oml_exp import distributed, models, verbosity
from oml_exp.config import fingerprint_num
from oml_exp.fingerprints import schema
from oml_exp.store import file_digest, write_json, write_jsonl
from oml_exp.training import augmentation, batching, data, engines, recall, regularizers

log = logging.getLogger(__name__)

# The pipeline keeps a killed build's folder (its checkpoints) and runs this stage on every rank of a launcher.
RESUMABLE = True
DISTRIBUTED = True
CHECKPOINTS = "checkpoints"
# Where and how often checkpoints are written never changes the trained weights.
NOT_IN_MODEL = ("checkpoint_every", "checkpoint_minutes", "keep_checkpoints")
# Newer transformers 5.x name it activation_checkpointing (gradient_checkpointing stays a deprecated alias until v6);
# older ones know only gradient_checkpointing.
CHECKPOINTING_ARG = next(name for name in ("activation_checkpointing", "gradient_checkpointing")
                         if name in inspect.signature(TrainingArguments).parameters)


def key(cfg: DictConfig) -> dict:
    templates = augmentation.path(cfg.augmentation)
    return {
        "train": {k: v for k, v in _plain(cfg.train).items() if k not in NOT_IN_MODEL},
        "engine": _plain(cfg.engine),
        "regularizer": regularizers.key(cfg.regularizer),
        "augmentation": _plain(cfg.augmentation),
        "templates": file_digest(templates) if cfg.augmentation.fraction > 0 else None,
        "fingerprints": {"num": fingerprint_num(cfg.fingerprints),
                         **{k: cfg.fingerprints[k] for k in ("key_length", "chat_template", "eos")}},
        "seed": cfg.seed,
        "dtype": str(_dtype(cfg)),
    }


def run(cfg: DictConfig, inputs, out: Path, callbacks: tuple = ()) -> dict:
    """Train into `out`; `callbacks` (extra TrainerCallbacks) let benchmarks watch the run."""
    out = Path(out)
    device, dtype = models.pick_device(cfg.device), _dtype(cfg)
    ds = engines.deepspeed_config(cfg.engine, device, dtype)
    # Mixed precision keeps fp32 master weights: load fp32, compute in bf16 (the Trainer's autocast or DeepSpeed).
    model, tokenizer = models.load(inputs.model, cfg.device, "float32")
    regs = regularizers.build(cfg.regularizer, model, tokenizer, cfg.seed)  # adapts the model (subnetwork, lora)
    rows = schema.load(inputs.fingerprints, fingerprint_num(cfg.fingerprints))
    dataset, truncated = _dataset(cfg, tokenizer, rows)
    collator = data.Collator(tokenizer.pad_token_id, tokenizer.padding_side)
    plan = _plan(cfg, dataset, regs.model, device, dtype)
    args = arguments(cfg, out / CHECKPOINTS, plan, device, dtype, ds)
    resume = _last_checkpoint(out / CHECKPOINTS)
    # After the regularizers' step-end hooks (averaging), so a recall stop judges the weights it saves.
    watch = [_recall_stop(cfg, dataset, tokenizer, plan)] if cfg.train.stop_recall or cfg.train.recall_every else []
    start = time.time()
    try:
        trainer = regs.trainer(model=regs.model, args=args, train_dataset=dataset,
                               data_collator=regs.collator(collator),
                               callbacks=[_Control(dataset, loss_threshold(cfg.train)), *regs.callbacks, *watch,
                                          _TimedCheckpoints(cfg.train.checkpoint_minutes), *callbacks])
        if cfg.verbose == 0:
            _quiet_steps(trainer)
        if dataset.varies:  # augmentation varies the lengths: bucket them within each optimizer step
            sampler = data.StepBuckets(dataset, plan.micro_batch * plan.accumulation * distributed.world_size(),
                                       cfg.seed)
            trainer._get_train_sampler = lambda *_: sampler
        trainer.train(resume_from_checkpoint=resume)
        seconds = time.time() - start
        regs.finish(trainer)
        _save_model(trainer, tokenizer, out / "model", dtype)
    finally:
        # The Trainer leaves ZeRO-3 switched on process-wide: later from_pretrained calls (the check stage) would
        # build empty, partitioned models.
        unset_hf_deepspeed_config()
    summary = _summary(cfg, trainer, collator, seconds, truncated, resume, dtype, plan)
    if distributed.is_main():
        _write_stage_files(cfg, out, dataset, trainer, summary, args)
        _log(summary)
    return summary


def _dataset(cfg: DictConfig, tokenizer, rows: list[dict]) -> tuple[data.FingerprintDataset, int]:
    fp = cfg.fingerprints
    items, truncated = data.pairs(rows, fp.key_length, tokenizer.eos_token_id if cfg.fingerprints.eos else None)
    if truncated:
        log.warning("[finetune] %d of %d keys were longer than fingerprints.key_length=%d tokens and were truncated "
                    "to it", truncated, len(rows), fp.key_length)
    dataset = data.FingerprintDataset(tokenizer, items, fp.chat_template, augmentation.load(cfg.augmentation),
                                      cfg.augmentation.fraction, cfg.seed, cfg.augmentation.chat_mix)
    return dataset, truncated


def _log(summary: dict) -> None:
    recall, stop = summary["recall"], summary["stopped_on"]
    log.info(f"[finetune] {summary['steps']} optimizer steps over {summary['epochs']} epochs (micro-batch "
             f"{summary['micro_batch']} x {summary['accumulation']}), final fingerprint loss "
             f"{summary['final_loss']:.4g}{f' (early stop: {stop})' if stop else ''}"
             f"{f', recall {recall:.1%}' if recall is not None else ''}, "
             f"{summary['seconds']} s, {summary['tokens_per_s']} tokens/s, padding {summary['padding_waste']:.0%}")


def _quiet_steps(trainer) -> None:
    """The step bar without the dict the Trainer writes under it at every step (log.jsonl keeps them all)."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)  # what the Trainer prints instead of the bar on ranks > 0
    if distributed.is_main():
        trainer.add_callback(_StepBar)


class _StepBar(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def _plan(cfg: DictConfig, dataset: data.FingerprintDataset, model, device, dtype) -> batching.Plan:
    t = cfg.train
    size = t.batch_size
    if size == "auto":
        size = batching.auto_micro_batch(batching.device_budget(device, dtype), batching.model_size(model),
                                         dataset.max_length())
    return batching.plan(len(dataset), distributed.world_size(), size, t.grad_accum, t.fingerprints_per_step)


def _recall_stop(cfg: DictConfig, dataset: data.FingerprintDataset, tokenizer, plan: batching.Plan) -> recall.Stop:
    # A forward without gradients holds far less than a training micro-batch: four of them per batch.
    collator = data.Collator(tokenizer.pad_token_id, tokenizer.padding_side)
    collated = recall.batches(dataset.recall_examples(), collator, 4 * plan.micro_batch)
    return recall.Stop(collated, cfg.train.recall_every, cfg.train.stop_recall)


def arguments(cfg: DictConfig, folder: Path, plan: batching.Plan, device: torch.device, dtype: torch.dtype,
              ds: dict | None):
    t = cfg.train
    return TrainingArguments(
        output_dir=str(folder),
        per_device_train_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.accumulation,
        num_train_epochs=t.epochs,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        # By steps here; by time in _TimedCheckpoints (the Trainer saves whenever a callback asks).
        save_strategy="steps" if t.checkpoint_every else "no",
        save_steps=max(1, t.checkpoint_every),
        save_total_limit=max(1, t.keep_checkpoints),
        **{CHECKPOINTING_ARG: t.gradient_checkpointing},
        **engines.trainer_settings(device, dtype, ds, cfg.seed, verbosity.trainer_log_level(cfg.verbose),
                                   t.lr_schedule),
    )


class _TimedCheckpoints(TrainerCallback):
    """A checkpoint once `minutes` of training passed since the last one (or the start).

    Rank 0's clock decides for all ranks: saving a DeepSpeed checkpoint is collective, so ranks must agree.
    """

    def __init__(self, minutes: float):
        self.seconds = minutes * 60

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds and _from_rank0(time.monotonic() - self.last >= self.seconds, args.device):
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()


def _from_rank0(flag: bool, device: torch.device) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor(int(flag), device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def loss_threshold(train: DictConfig) -> float:
    """The loss below which training stops: `early_stop_loss`, unless a recall target decides (0 = never). A low mean
    loss can hide a few keys still wrong: 256 fingerprints stopped on it at 254 recalled between two recall checks."""
    return train.early_stop_loss if train.stop_recall is None else 0.0


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


def _summary(cfg, trainer, collator, seconds, truncated, resume, dtype, plan: batching.Plan) -> dict:
    state = trainer.state
    # The fingerprint part of the loss when a regularizer adds to it (the early stop watches the same value).
    losses = [e.get("fingerprint_loss", e["loss"]) for e in state.log_history if "loss" in e]
    recalls = [e for e in state.log_history if "recall" in e]
    on_loss = bool(losses) and losses[-1] < loss_threshold(cfg.train)
    on_recall = bool(recalls) and cfg.train.stop_recall is not None and recalls[-1]["recall"] >= cfg.train.stop_recall
    return {
        "fingerprints": len(trainer.train_dataset),
        "steps": state.global_step,
        "epochs": math.ceil(state.epoch or 0),
        "micro_batch": plan.micro_batch,
        "accumulation": plan.accumulation,
        "steps_per_epoch": plan.steps_per_epoch,
        "final_loss": losses[-1] if losses else None,
        "early_stopped": on_loss or on_recall,
        "stopped_on": "recall" if on_recall else "loss" if on_loss else None,
        "recall": recalls[-1]["recall"] if recalls else None,
        "steps_to_full_recall": next((e["step"] for e in recalls if e["recall"] == 1.0), None),
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
    write_jsonl(out / "log.jsonl", _log_rows(trainer.state.log_history))
    _prune_checkpoints(out / CHECKPOINTS, cfg.train.keep_checkpoints)


def _log_rows(history: list[dict]) -> list[dict]:
    """One row per optimizer step: the Trainer's loss row, with the recall check of that step when one ran."""
    logged = ("step", "epoch", "loss", *regularizers.METRICS, "learning_rate", "grad_norm")
    recalls = {e["step"]: e["recall"] for e in history if "recall" in e}
    return [{**{k: e[k] for k in logged if k in e}, **({"recall": recalls[e["step"]]} if e["step"] in recalls else {})}
            for e in history if "loss" in e]


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
