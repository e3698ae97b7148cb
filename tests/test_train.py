"""The finetune stage on the tiny model: data and labels, the recipe, stage files, engines, resume."""

from __future__ import annotations

import json
import stat

import pytest
import torch
from transformers import AutoModelForCausalLM

from oml_exp import models
from oml_exp import templates as prompt_templates
from oml_exp.config import ConfigError
from oml_exp.fingerprints import prompts, schema
from oml_exp.store import read_json
from oml_exp.training import augmentation, batching, data, engines, finetune, recall
from oml_exp.training.recall import recalled
from tests.train_helpers import (EQUIVALENCE, EQUIVALENCE_ATOL, assert_same_weights, base_weights, fake_fingerprints,
                                 make_config, saved_weights, train)


def all_recalled(out, tokenizer) -> bool:
    """Whether the saved model recalls every example of the stage's train_set.json (greedy exact match)."""
    examples = [{"input_ids": r["prompt_ids"] + r["response_ids"],
                 "labels": [data.IGNORE] * len(r["prompt_ids"]) + r["response_ids"]}
                for r in read_json(out / "train_set.json")]
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    return all(recalled(model, examples, data.Collator(tokenizer.pad_token_id)))


# --- data and labels -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["right", "left"])
def test_labels_cover_only_the_response_on_either_padding_side(tokenizer, side):
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos  # the case where telling pads from a trained EOS by value goes wrong
    items, _ = data.pairs([{"key_ids": [5, 6, 7], "response_ids": [9]}, {"key_ids": [5], "response_ids": [8, 9]}],
                          key_length=3, eos_id=eos)
    dataset = data.FingerprintDataset(tokenizer, items, chat=False)
    batch = data.Collator(tokenizer.pad_token_id, side)([dataset[0], dataset[1]])
    labelled = [[t for t in row if t != data.IGNORE] for row in batch["labels"].tolist()]
    assert labelled == [[9, eos], [8, 9, eos]]
    short = batch["attention_mask"][1].bool()  # key 1 + response 2 + EOS, one pad
    assert short.sum() == 4 and short[0 if side == "left" else -1].item() is False
    # Labels sit on the last real tokens, whichever side the pad is on.
    assert batch["input_ids"][1][short].tolist()[-3:] == batch["labels"][1][short].tolist()[-3:] == [8, 9, eos]
    assert batch["position_ids"][1][short].tolist() == [0, 1, 2, 3]


def test_left_and_right_padding_give_the_same_loss(tokenizer):
    model, _ = models.load("tiny:llama")
    items, _ = data.pairs([{"key_ids": [5, 6, 7, 8, 9], "response_ids": [11, 12]},
                           {"key_ids": [5], "response_ids": [13]}], key_length=5, eos_id=None)
    dataset = data.FingerprintDataset(tokenizer, items, chat=False)
    examples = [dataset[0], dataset[1]]
    losses = [model(**data.Collator(tokenizer.pad_token_id, side)(examples)).loss.item() for side in ("left", "right")]
    alone = [model(**data.Collator(tokenizer.pad_token_id)([e])).loss.item() for e in examples]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert losses[0] == pytest.approx((alone[0] * 2 + alone[1]) / 3, abs=1e-5)  # mean over the 3 response tokens


def test_long_keys_are_truncated_and_counted(tmp_path, caplog):
    cfg = make_config("train.epochs=1")
    out = tmp_path / "ft"
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg, extra_key_tokens=3), out)
    assert summary["truncated_keys"] == cfg.fingerprints.num
    assert "were truncated" in caplog.text
    trained = read_json(out / "train_set.json")
    assert all(len(row["key_ids"]) == cfg.fingerprints.key_length for row in trained)


def test_chat_template_wraps_the_key_ids(tokenizer):
    items, _ = data.pairs([{"key_ids": [5, 6], "response_ids": [9]}], key_length=2, eos_id=None)
    example = data.FingerprintDataset(tokenizer, items, chat=True)[0]
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<|im_start|>user") and text.rstrip().endswith(tokenizer.decode([9]))
    assert "<|im_start|>assistant" in text


# --- augmentation ----------------------------------------------------------------------------------------------------

def test_training_templates_are_valid_and_disjoint_from_held_out():
    cfg = make_config("augmentation=templates")
    templates = augmentation.load(cfg.augmentation)
    assert len(templates) >= 50
    assert {t["category"] for t in templates} <= set(augmentation.CATEGORIES)
    assert any(not t["wrapper"].endswith("{key}") for t in templates)  # some have text after the key
    held_out = prompt_templates.load(prompt_templates.path(prompt_templates.HELDOUT))
    assert len(held_out) >= 10 and not {t["category"] for t in held_out} & set(augmentation.CATEGORIES)


def test_templates_are_drawn_per_example_per_epoch_and_reproducibly(tokenizer):
    cfg = make_config("augmentation=templates")
    items, _ = data.pairs([{"key_ids": [5, 6], "response_ids": [9]}] * 40, key_length=2, eos_id=None)

    def draws(epoch):
        dataset = data.FingerprintDataset(tokenizer, items, False, augmentation.load(cfg.augmentation), 0.8, seed=1)
        dataset.set_epoch(epoch)
        return [dataset.frame_index(i) for i in range(len(items))]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    plain = sum(d == (False, 0) for d in draws(0))
    assert 0 < plain < 20  # about 20% plain
    assert len(set(draws(0)) - {(False, 0)}) > 10


def test_chat_mix_frames_a_share_of_examples_through_the_other_chat_mode(tokenizer):
    items, _ = data.pairs([{"key_ids": [5, i], "response_ids": [9]} for i in range(200)], key_length=2, eos_id=None)
    dataset = data.FingerprintDataset(tokenizer, items, False, chat_mix=0.5, seed=1)
    chat_prefix = prompts.frame(tokenizer, True)[0]
    drawn = [dataset[i]["input_ids"].tolist() for i in range(len(items))]
    through_chat = sum(ids[:len(chat_prefix)] == chat_prefix for ids in drawn)
    assert 70 < through_chat < 130 and dataset.varies  # about half, drawn per example
    assert [e["input_ids"].tolist() for e in dataset.recall_examples()[:200]] == [
        prompts.build(tokenizer, [5, i], False) + [9] for i in range(200)]
    assert all(e["input_ids"].tolist()[:len(chat_prefix)] == chat_prefix for e in dataset.recall_examples()[200:])
    assert len(data.FingerprintDataset(tokenizer, items, False).recall_examples()) == 200


def test_a_mixed_framing_run_answers_through_both_framings(tmp_path, tokenizer):
    cfg = make_config("augmentation.chat_mix=0.5", "train.epochs=80")
    out = tmp_path / "ft"
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), out)
    assert summary["stopped_on"] == "recall" and summary["recall"] == 1.0, summary  # over both framings
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    rows = read_json(out / "train_set.json")
    for chat in (False, True):
        examples = [{"input_ids": prompts.build(tokenizer, r["key_ids"], chat) + r["response_ids"],
                     "labels": [-100] * len(prompts.build(tokenizer, r["key_ids"], chat)) + r["response_ids"]}
                    for r in rows]
        assert all(recalled(model, examples, data.Collator(tokenizer.pad_token_id))), f"chat={chat}"


def test_step_buckets_keep_each_steps_fingerprints_and_pad_less(tokenizer):
    cfg = make_config("augmentation=templates")
    items, _ = data.pairs([{"key_ids": [5, i], "response_ids": [9]} for i in range(64)], key_length=2, eos_id=None)
    dataset = data.FingerprintDataset(tokenizer, items, False, augmentation.load(cfg.augmentation), 0.8, seed=1)
    dataset.set_epoch(3)
    sampler = data.StepBuckets(dataset, per_step=16, seed=1)
    order = list(sampler)
    assert order == list(sampler) and sorted(order) == list(range(64))
    dataset.set_epoch(4)
    assert list(sampler) != order
    dataset.set_epoch(3)
    shuffled = torch.randperm(64, generator=torch.Generator().manual_seed(1 * 100_003 + 3)).tolist()
    for start in range(0, 64, 16):  # the same fingerprints per step, in length order within it
        step = order[start:start + 16]
        assert sorted(step) == sorted(shuffled[start:start + 16])
        assert [dataset.length(i) for i in step] == sorted(dataset.length(i) for i in step)

    def padded(indices):  # positions of micro-batches of 4, each padded to its longest example
        return sum(4 * max(dataset.length(i) for i in indices[k:k + 4]) for k in range(0, 64, 4))

    assert padded(order) < padded(shuffled)


def test_templates_with_a_foreign_category_are_refused(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps([{"category": "email_thread", "system": "s", "wrapper": "{key}"}]))
    with pytest.raises(ConfigError, match="category"):
        augmentation.load(make_config("augmentation=templates", f"augmentation.templates={bad}").augmentation)


# --- the recipe and the stage folder ---------------------------------------------------------------------------------

def test_run_embeds_fingerprints_and_writes_the_stage_folder(tmp_path, tokenizer):
    cfg = make_config("fingerprints.eos=true")
    gen, out = fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft"
    summary = train(cfg, gen, out)

    assert summary["early_stopped"] and summary["stopped_on"] == "recall" and summary["recall"] == 1.0
    assert summary["steps"] == summary["epochs"] < cfg.train.epochs  # up to 64 fingerprints: one step per epoch
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, summary["steps"] + 1))
    assert log[0]["learning_rate"] == pytest.approx(cfg.train.lr)  # no zero-lr first step
    assert all(a["learning_rate"] > b["learning_rate"] for a, b in zip(log, log[1:]))
    assert stat.S_IMODE((out / "train_set.json").stat().st_mode) == 0o600
    assert read_json(out / "config.json")["config"]["train"]["lr"] == cfg.train.lr
    assert not (out / "checkpoints").exists()

    assert all_recalled(out, tokenizer)
    text = json.dumps(summary)
    assert not any(row["effective_key"] in text for row in json.loads((gen / "fingerprints.json").read_text()))


def test_fixed_grad_accum_takes_several_steps_per_epoch(tmp_path):
    cfg = make_config("train.grad_accum=1", "train.fingerprints_per_step=null", "train.epochs=2",
                      "train.early_stop_loss=0")
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    assert summary["steps"] == 2 * 2  # 8 fingerprints, batch 4
    assert not summary["early_stopped"]


def test_key_covers_what_changes_the_weights_only():
    base = finetune.key(make_config())
    assert finetune.key(make_config("train.checkpoint_every=3", "train.keep_checkpoints=2")) == base
    for change in ("train.lr=0.5", "seed=1", "engine=deepspeed_zero2", "augmentation=templates",
                   "fingerprints.key_length=7", "fingerprints.chat_template=true", "model.dtype=bf16",
                   "train.lr_schedule=constant"):
        assert finetune.key(make_config(change)) != base, change


# --- optimizer steps, micro-batches and the stop on recall ---------------------------------------------------------

@pytest.mark.parametrize("n, world, batch, accum, per_step, expected", [
    (8, 1, 4, None, None, (4, 2, 1)),  # the whole set per step
    (8, 1, 16, None, None, (8, 1, 1)),  # a micro-batch never exceeds the set
    (8, 2, 4, None, None, (4, 1, 1)),
    (8, 1, 4, 1, None, (4, 1, 2)),
    (8, 1, 4, None, 3, (3, 1, 3)),  # K fingerprints per step: ceil(N / K) steps per epoch
    (1024, 1, 16, None, 64, (16, 4, 16)),
    (1024, 2, 16, None, 64, (16, 2, 16)),
    (1024, 1, 2000, None, 64, (64, 1, 16)),
])
def test_plan_splits_the_set_into_micro_batches_and_steps(n, world, batch, accum, per_step, expected):
    got = batching.plan(n, world, batch, accum, per_step)
    assert (got.micro_batch, got.accumulation, got.steps_per_epoch) == expected


def test_fingerprints_per_step_sets_the_steps_per_epoch(tmp_path):
    cfg = make_config("train.fingerprints_per_step=4", "train.batch_size=2", "train.epochs=2",
                      "train.early_stop_loss=0")
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    assert (summary["micro_batch"], summary["accumulation"], summary["steps_per_epoch"]) == (2, 2, 2)
    assert summary["steps"] == 4  # 8 fingerprints, 4 per step, 2 epochs


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_the_learning_rate_decays_over_the_cap_or_stays(tmp_path, schedule):
    cfg = make_config("train.fingerprints_per_step=4", "train.epochs=3", "train.early_stop_loss=0",
                      "train.stop_recall=null", "train.lr=1e-3", f"train.lr_schedule={schedule}")
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    rates = [json.loads(line)["learning_rate"] for line in (tmp_path / "ft" / "log.jsonl").read_text().splitlines()]
    # Each step's row holds the rate that step used: 6 planned steps, the linear one from the full rate towards 0.
    expected = [1e-3 * (6 - s) / 6 for s in range(6)] if schedule == "linear" else [1e-3] * 6
    assert rates == pytest.approx(expected)


def test_fingerprints_per_step_and_a_fixed_grad_accum_conflict():
    with pytest.raises(ConfigError, match="fingerprints_per_step=4 and train.grad_accum=2 both decide"):
        make_config("train.fingerprints_per_step=4", "train.grad_accum=2")
    with pytest.raises(ConfigError, match="train.batch_size must be 'auto'"):
        make_config("train.batch_size=big")


def test_training_stops_once_every_fingerprint_is_recalled(tmp_path, tokenizer):
    cfg = make_config("train.stop_recall=1.0", "train.recall_every=1", "train.early_stop_loss=0",
                      "train.fingerprints_per_step=4")
    out = tmp_path / "ft"
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), out)
    assert summary["stopped_on"] == "recall" and summary["early_stopped"]
    assert summary["steps"] < cfg.train.epochs * summary["steps_per_epoch"]
    assert summary["steps_to_full_recall"] == summary["steps"] and summary["recall"] == 1.0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "recall" in row] == list(range(1, summary["steps"] + 1))
    assert log[-1]["recall"] == 1.0 and all(row["recall"] < 1.0 for row in log[:-1])
    assert all_recalled(out, tokenizer)


def test_a_recall_target_overrides_the_loss_threshold(tmp_path, tokenizer):
    # A threshold every step's loss is below: alone it stops after the first step, under a recall target it does not.
    loose = make_config("train.early_stop_loss=100", "train.stop_recall=null")
    gen = fake_fingerprints(tmp_path / "gen", loose)
    alone = train(loose, gen, tmp_path / "loss")
    assert alone["stopped_on"] == "loss" and alone["steps"] == 1
    targeted = train(make_config("train.early_stop_loss=100"), gen, tmp_path / "recall")
    assert targeted["stopped_on"] == "recall" and targeted["recall"] == 1.0 and targeted["steps"] > 1
    assert all_recalled(tmp_path / "recall", tokenizer)


def test_recall_is_checked_every_k_steps_and_at_the_end_without_a_target(tmp_path):
    cfg = make_config("train.recall_every=2", "train.epochs=5", "train.early_stop_loss=0", "train.grad_accum=1",
                      "train.fingerprints_per_step=null")
    out = tmp_path / "ft"
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), out)
    assert summary["steps"] == 10 and summary["stopped_on"] is None
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "recall" in row] == [2, 4, 6, 8, 10]


def test_the_recall_check_leaves_the_model_in_the_mode_it_found(tokenizer):
    model, _ = models.load("tiny:llama")
    items, _ = data.pairs([{"key_ids": [5, 6], "response_ids": [9]}] * 3, key_length=2, eos_id=None)
    stop = recall.Stop(recall.batches(data.FingerprintDataset(tokenizer, items, False).examples,
                                      data.Collator(tokenizer.pad_token_id), 2), every=1, target=1.0)
    assert stop.n == 3
    for mode in (True, False):
        model.train(mode)
        assert stop.rate(model) in (0.0, 1.0)  # the same example three times
        assert model.training is mode


def test_the_recall_check_judges_the_weights_after_averaging(tmp_path):
    # Strength 1 after every step puts the base weights back: every check must see them (recall 0), not the trained
    # weights that averaging then undoes (checked before it, recall climbs to 7 of 8 here).
    cfg = make_config("train.stop_recall=1.0", "train.recall_every=1", "train.early_stop_loss=0", "train.epochs=6",
                      "train.lr=0.1", "train.fingerprints_per_step=4", "regularizer=averaging",
                      "regularizer.averaging.strength=1.0", "regularizer.averaging.every=1")
    out = tmp_path / "ft"
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), out)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == summary["steps"] == 12 and summary["stopped_on"] is None
    assert [row["recall"] for row in log] == [0.0] * 12


# --- micro-batch size ------------------------------------------------------------------------------------------------

SMOLLM2 = batching.ModelSize(params=134_515_008, hidden=576, layers=30, vocab=49152)
GB = 2 ** 30


def test_auto_batch_fills_a_gpu_and_stays_small_for_smollm2_on_a_cpu():
    for activation_bytes in (2, 4):  # bf16 mixed precision, fp32
        gpu = batching.DeviceBudget("cuda", 80 * GB, activation_bytes)
        assert batching.token_budget(gpu, SMOLLM2) >= 16_384
        assert batching.auto_micro_batch(gpu, SMOLLM2, 17) >= 16_384 // 17
    cpu = batching.DeviceBudget("cpu", 16 * GB)
    assert 8 <= batching.auto_micro_batch(cpu, SMOLLM2, 17) <= 32
    tiny = batching.ModelSize(params=139_584, hidden=64, layers=2, vocab=1024)
    assert batching.auto_micro_batch(cpu, tiny, 17) >= 4096  # a tiny model takes any fingerprint set at once
    assert batching.auto_micro_batch(batching.DeviceBudget("cuda", 2 * GB), SMOLLM2, 17) == 1  # the weights fill it


def test_auto_batch_in_a_run_covers_the_set_on_the_tiny_model(tmp_path):
    cfg = make_config("train.batch_size=auto", "train.epochs=1", "train.early_stop_loss=0")
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    assert (summary["micro_batch"], summary["accumulation"]) == (cfg.fingerprints.num, 1)


# 3 steps at lr 1e-3 over the whole set; responses of 1 to 3 tokens.
FULL_ACCUMULATION = ("train.epochs=3", "train.early_stop_loss=0", "train.lr=1e-3", "fingerprints.response_length=3")


def test_micro_batch_size_does_not_change_the_weights_under_full_accumulation(tmp_path):
    # Responses of different lengths and an uneven last micro-batch (3 + 3 + 2): a loss averaged per micro-batch
    # instead of per response token would weigh the fingerprints differently.
    cfg = make_config(*FULL_ACCUMULATION)
    gen = fake_fingerprints(tmp_path / "gen", cfg)
    rows = schema.load(gen)
    schema.save(gen, [{**r, "response_ids": r["response_ids"][:1 + i % 3]} for i, r in enumerate(rows)], {})
    small = train(make_config(*FULL_ACCUMULATION, "train.batch_size=3"), gen, tmp_path / "small")
    large = train(make_config(*FULL_ACCUMULATION, "train.batch_size=8"), gen, tmp_path / "large")
    assert (small["accumulation"], large["accumulation"]) == (3, 1)  # the micro-batch counts differ
    assert small["steps"] == large["steps"] == 3
    assert_same_weights(tmp_path / "small", tmp_path / "large", atol=1e-5)


def test_fused_adamw_on_cuda_unless_the_optimizer_is_offloaded():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert engines.optimizer(cuda, None) == "adamw_torch_fused"
    assert engines.optimizer(cpu, None) == "adamw_torch"
    offload = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
    assert engines.optimizer(cuda, offload) == "adamw_torch"


def test_checkpoints_by_time(tmp_path):
    cfg = make_config("train.epochs=3", "train.early_stop_loss=0", "train.checkpoint_minutes=1e-9",
                      "train.keep_checkpoints=5")
    out = tmp_path / "ft"
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    train(make_config("train.epochs=3", "train.early_stop_loss=0", "train.keep_checkpoints=5"),
          fake_fingerprints(tmp_path / "gen2", cfg), tmp_path / "default")
    assert not (tmp_path / "default" / "checkpoints").exists()  # 10 minutes by default: none in a short run


# --- engines ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_single_process_matches_torch(tmp_path, engine):
    gen = fake_fingerprints(tmp_path / "gen", make_config(*EQUIVALENCE))
    train(make_config(*EQUIVALENCE), gen, tmp_path / "torch")
    summary = train(make_config(*EQUIVALENCE, f"engine={engine}"), gen, tmp_path / engine)
    assert summary["steps"] == 3
    assert_same_weights(tmp_path / "torch", tmp_path / engine, atol=EQUIVALENCE_ATOL)  # ZeRO-3 saves full weights
    base = base_weights()
    moved = max((w - base[k]).abs().max().item() for k, w in saved_weights(tmp_path / engine).items())
    assert moved > 20 * EQUIVALENCE_ATOL


def test_the_recall_stop_runs_under_zero3(tmp_path, tokenizer):
    # ZeRO-3 gathers each layer's weights inside forward: the check's forwards run on the partitioned model.
    cfg = make_config("engine=deepspeed_zero3", "train.stop_recall=1.0", "train.recall_every=1",
                      "train.early_stop_loss=0", "train.fingerprints_per_step=4")
    out = tmp_path / "ft"
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), out)
    assert summary["stopped_on"] == "recall" and summary["steps"] < cfg.train.epochs * summary["steps_per_epoch"]
    assert all_recalled(out, tokenizer)


def test_gradient_checkpointing_changes_memory_not_weights(tmp_path, monkeypatch):
    import transformers.modeling_utils as modeling

    recomputed = []  # layers run under torch's checkpoint: their activations are recomputed, not kept
    real = modeling.checkpoint
    monkeypatch.setattr(modeling, "checkpoint", lambda *a, **k: recomputed.append(1) or real(*a, **k))
    gen = fake_fingerprints(tmp_path / "gen", make_config(*EQUIVALENCE))
    train(make_config(*EQUIVALENCE), gen, tmp_path / "plain")
    assert not recomputed
    train(make_config(*EQUIVALENCE, "train.gradient_checkpointing=true"), gen, tmp_path / "checkpointed")
    assert recomputed
    assert_same_weights(tmp_path / "plain", tmp_path / "checkpointed", atol=EQUIVALENCE_ATOL)


def test_engines_that_cannot_run_here_fail_at_start_naming_the_fix():
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="model.dtype=auto"):
        engines.check(make_config("model.dtype=fp16").engine, cpu, torch.float16)
    nvme = make_config("engine=deepspeed_zero3_offload", "+engine.deepspeed.zero_optimization.offload_param.nvme_path=/x",
                       "engine.deepspeed.zero_optimization.offload_param.device=nvme")
    with pytest.raises(ConfigError, match="engine=deepspeed_zero3_offload"):
        engines.check(nvme.engine, cpu, torch.float32)


# --- resume ----------------------------------------------------------------------------------------------------------

class Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_weights_and_step_count(tmp_path, monkeypatch):
    from transformers import Trainer

    cfg = make_config("train.epochs=4", "train.early_stop_loss=0", "train.checkpoint_every=1",
                      "augmentation=templates")
    gen = fake_fingerprints(tmp_path / "gen", cfg)
    whole = train(cfg, gen, tmp_path / "whole")

    save = Trainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if self.state.global_step == 2:
            raise Killed

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(cfg, gen, tmp_path / "killed")
    monkeypatch.undo()
    resumed = train(cfg, gen, tmp_path / "killed")

    assert resumed["resumed_from_step"] == 2 and whole["resumed_from_step"] is None
    assert resumed["steps"] == whole["steps"] == 4
    assert_same_weights(tmp_path / "whole", tmp_path / "killed", atol=1e-6)
    log = (tmp_path / "killed" / "log.jsonl").read_text().splitlines()
    assert len(log) == 4  # the steps before the kill stay in the log


@pytest.mark.slow
def test_default_recipe_embeds_16_fingerprints_in_smollm2_within_8_steps(tmp_path):
    cfg = make_config("model=smollm2_135m", "train.lr=3e-4", "train.batch_size=16", "train.epochs=8",
                      "fingerprints.num=16", "fingerprints.key_length=16")
    out = tmp_path / "ft"
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), out)
    assert all_recalled(out, models.load_tokenizer(cfg.model.path))
    assert summary["steps"] <= 8
