"""The finetune stage on the tiny model: data and labels, the recipe, stage files, engines, resume."""

from __future__ import annotations

import json
import stat

import pytest
import torch
from transformers import AutoModelForCausalLM

from oml_exp import models
from oml_exp.config import ConfigError
from oml_exp.store import read_json
from oml_exp.training import augmentation, data, engines, finetune
from oml_exp.training.recall import recalled
from tests.train_helpers import fake_fingerprints, make_config, train



@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer("tiny:llama")


def weights(folder):
    return AutoModelForCausalLM.from_pretrained(folder / "model").state_dict()


def assert_same_weights(a, b, atol=1e-5):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"weights differ by up to {worst}"


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


def test_long_keys_are_truncated_and_counted(tmp_path, capsys):
    cfg = make_config("train.epochs=1")
    out = tmp_path / "ft"
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg, extra_key_tokens=3), out)
    assert summary["truncated_keys"] == cfg.fingerprints.num
    assert "were truncated" in capsys.readouterr().out
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
    templates = augmentation.load(cfg)
    assert len(templates) >= 50
    assert {t["category"] for t in templates} <= set(augmentation.CATEGORIES)
    assert any(not t["wrapper"].endswith("{key}") for t in templates)  # some have text after the key
    held_out = augmentation.DATA / "heldout_templates.json"
    if held_out.exists():
        assert not {t["category"] for t in json.loads(held_out.read_text())} & set(augmentation.CATEGORIES)


def test_templates_are_drawn_per_example_per_epoch_and_reproducibly(tokenizer):
    cfg = make_config("augmentation=templates")
    items, _ = data.pairs([{"key_ids": [5, 6], "response_ids": [9]}] * 40, key_length=2, eos_id=None)

    def draws(epoch):
        dataset = data.FingerprintDataset(tokenizer, items, False, augmentation.load(cfg), 0.8, seed=1)
        dataset.set_epoch(epoch)
        return [dataset.frame_index(i) for i in range(len(items))]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    plain = sum(d is None for d in draws(0))
    assert 0 < plain < 20  # about 20% plain
    assert len(set(draws(0)) - {None}) > 10


def test_templates_with_a_foreign_category_are_refused(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps([{"category": "email_thread", "system": "s", "wrapper": "{key}"}]))
    with pytest.raises(ConfigError, match="category"):
        augmentation.load(make_config("augmentation=templates", f"augmentation.templates={bad}"))


# --- the recipe and the stage folder ---------------------------------------------------------------------------------

def test_run_embeds_fingerprints_and_writes_the_stage_folder(tmp_path, tokenizer):
    cfg = make_config("train.eos=true")
    gen, out = fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft"
    summary = train(cfg, gen, out)

    assert summary["early_stopped"] and summary["final_loss"] < cfg.train.early_stop_loss
    assert summary["steps"] == summary["epochs"] < cfg.train.epochs  # grad_accum=all: one step per epoch
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
    cfg = make_config("train.grad_accum=1", "train.epochs=2", "train.early_stop_loss=0")
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    assert summary["steps"] == 2 * 2  # 8 fingerprints, batch 4
    assert not summary["early_stopped"]


def test_key_covers_what_changes_the_weights_only():
    base = finetune.key(make_config())
    assert finetune.key(make_config("train.checkpoint_every=3", "train.keep_checkpoints=2")) == base
    for change in ("train.lr=0.5", "seed=1", "engine=deepspeed_zero2", "augmentation=templates",
                   "fingerprints.key_length=7", "fingerprints.chat_template=true", "model.dtype=bf16"):
        assert finetune.key(make_config(change)) != base, change


# --- engines ---------------------------------------------------------------------------------------------------------

# Adam turns float-noise differences in near-zero gradients into steps of up to lr, so engines agree to a small share
# of the distance the weights moved (3 steps of lr 1e-3), not to float epsilon.
EQUIVALENCE = ("train.epochs=3", "train.early_stop_loss=0", "train.lr=1e-3")
EQUIVALENCE_ATOL = 1e-4


@pytest.mark.parametrize("engine", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_single_process_matches_torch(tmp_path, engine):
    gen = fake_fingerprints(tmp_path / "gen", make_config(*EQUIVALENCE))
    train(make_config(*EQUIVALENCE), gen, tmp_path / "torch")
    summary = train(make_config(*EQUIVALENCE, f"engine={engine}"), gen, tmp_path / engine)
    assert summary["steps"] == 3
    assert_same_weights(tmp_path / "torch", tmp_path / engine, atol=EQUIVALENCE_ATOL)  # ZeRO-3 saves full weights
    base = AutoModelForCausalLM.from_pretrained(models.resolve("tiny:llama")).state_dict()
    moved = max((w - base[k]).abs().max().item() for k, w in weights(tmp_path / engine).items())
    assert moved > 20 * EQUIVALENCE_ATOL


def test_gradient_checkpointing_changes_memory_not_weights(tmp_path):
    gen = fake_fingerprints(tmp_path / "gen", make_config(*EQUIVALENCE))
    train(make_config(*EQUIVALENCE), gen, tmp_path / "plain")
    train(make_config(*EQUIVALENCE, "train.gradient_checkpointing=true"), gen, tmp_path / "checkpointed")
    assert_same_weights(tmp_path / "plain", tmp_path / "checkpointed", atol=EQUIVALENCE_ATOL)


def test_engines_that_cannot_run_here_fail_at_start_naming_the_fix():
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="model.dtype=auto"):
        engines.check(make_config("model.dtype=fp16"), cpu, torch.float16)
    nvme = make_config("engine=deepspeed_zero3_offload", "+engine.deepspeed.zero_optimization.offload_param.nvme_path=/x",
                       "engine.deepspeed.zero_optimization.offload_param.device=nvme")
    with pytest.raises(ConfigError, match="engine=deepspeed_zero3_offload"):
        engines.check(nvme, cpu, torch.float32)


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
