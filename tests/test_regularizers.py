"""The regularizer group on the tiny model: list composition, engine checks, benign mixing, distance penalty."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from oml_exp.config import ConfigError
from oml_exp.training import finetune, regularizers
from oml_exp.training.regularizers import benign, distance
from tests.train_helpers import QUICK, base_weights, fake_fingerprints, make_config, saved_weights, train


def log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


# --- config ----------------------------------------------------------------------------------------------------------

def test_regularizers_compose_as_a_list_and_none_turns_all_off():
    both = regularizers.picked(make_config("regularizer=[averaging,benign_mix]",
                                           "regularizer.averaging.strength=0.5").regularizer)
    assert [(type(r).__name__, r.name) for r in both] == [("Averaging", "averaging"), ("BenignMix", "benign_mix")]
    assert both[0].strength == 0.5 and both[1].fraction == 0.25  # set, and the class's default
    assert regularizers.picked(make_config("regularizer=none").regularizer) == []


def test_regularizer_settings_change_the_finetune_hash():
    keys = [finetune.key(make_config(*o)) for o in
            ([], ["regularizer=averaging"], ["regularizer=averaging", "regularizer.averaging.strength=0.5"],
             ["regularizer=[averaging,benign_mix]"])]
    assert len({json.dumps(k, sort_keys=True) for k in keys}) == len(keys)


@pytest.mark.parametrize("overrides, message", [
    (["regularizer=[subnetwork,lora]"], "pick one"),
    (["regularizer=benign_mix", "regularizer.benign_mix.fraction=1"], "regularizer.benign_mix.fraction"),
    (["regularizer=averaging", "regularizer.averaging.strength=2"], "regularizer.averaging.strength"),
    (["regularizer=subnetwork", "regularizer.subnetwork.fraction=0"], "regularizer.subnetwork"),
])
def test_bad_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(*overrides)


@pytest.mark.parametrize("overrides, message", [
    (["regularizer=lora", "engine=deepspeed_zero3"], "ZeRO-3"),
    (["regularizer=distance", "engine=deepspeed_zero3"], "ZeRO-3"),
    (["regularizer=subnetwork", "engine=deepspeed_zero3_offload"], "ZeRO-3"),
])
def test_engines_a_regularizer_cannot_use_fail_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(*overrides)


# --- benign mixing ---------------------------------------------------------------------------------------------------

def test_benign_prompts_are_disjoint_from_the_drift_prompts():
    ours = json.loads(benign.PROMPTS.read_text())
    drift = json.loads((benign.PROMPTS.parent / "drift_prompts.json").read_text())
    assert len(ours) == len(set(ours)) >= 64
    assert not {p.lower() for p in ours} & {p.lower() for p in drift}


def test_benign_batches_hold_the_fraction_and_the_benign_loss_is_logged(tmp_path, monkeypatch):
    shares = []
    mix = benign.MixingCollator.__call__

    def watched(self, examples):
        batch = mix(self, examples)
        shares.append(batch[benign.BENIGN].float().mean().item())
        return batch

    monkeypatch.setattr(benign.MixingCollator, "__call__", watched)
    # 12 fingerprints in batches of 6: each batch gains 2 benign rows, a quarter of its 8.
    cfg = make_config(*QUICK, "regularizer=benign_mix", "regularizer.benign_mix.texts=8",
                      "regularizer.benign_mix.tokens=12", "fingerprints.num=12", "train.batch_size=6")
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    assert shares == [0.25] * 6
    rows = log(tmp_path / "ft")
    assert len(rows) == 3 and all(r["benign_loss"] > 0 and r["fingerprint_loss"] > 0 for r in rows)
    f = 0.25  # one optimizer step per epoch: the logged loss is the weighted sum of its parts
    assert all(r["loss"] == pytest.approx((1 - f) * r["fingerprint_loss"] + f * r["benign_loss"], rel=1e-4)
               for r in rows)


def test_early_stop_watches_the_fingerprint_loss_alone(tmp_path):
    # The weights move far at this learning rate: the penalty keeps the total loss above the threshold.
    cfg = make_config("regularizer=distance", "regularizer.distance.beta=0.001", "train.stop_recall=null")
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    last = log(tmp_path / "ft")[-1]
    assert summary["early_stopped"] and summary["steps"] < cfg.train.epochs
    assert summary["final_loss"] == last["fingerprint_loss"] < cfg.train.early_stop_loss < last["loss"]


def test_benign_texts_from_a_jsonl_file(tmp_path, tokenizer):
    file = tmp_path / "texts.jsonl"
    file.write_text(json.dumps({"text": "the quick brown fox jumps over the lazy dog " * 5}) + "\n"
                    + json.dumps("a plain string row is a text too") + "\n\n")
    cfg = make_config("regularizer=benign_mix", f"regularizer.benign_mix.source={file}",
                      "regularizer.benign_mix.tokens=10").regularizer
    rows = benign.texts(regularizers.picked(cfg)[0], model=None, tokenizer=tokenizer)
    assert [len(r["input_ids"]) for r in rows][0] == 10 and len(rows) == 2
    assert all(r["labels"] == r["input_ids"] for r in rows)


def test_generated_benign_texts_are_labelled_on_the_written_part(tiny):
    model, tokenizer = tiny
    cfg = make_config("regularizer=benign_mix", "regularizer.benign_mix.texts=3",
                      "regularizer.benign_mix.tokens=5").regularizer
    rows = benign.texts(regularizers.picked(cfg)[0], model, tokenizer)
    assert len(rows) == 3
    for r in rows:
        written = [t for t in r["labels"] if t != -100]
        assert 1 <= len(written) <= 5 and r["input_ids"][-len(written):] == written


# --- distance penalty ------------------------------------------------------------------------------------------------

def test_logged_penalty_matches_a_direct_computation(tmp_path):
    beta = 0.5
    cfg = make_config(*QUICK, "regularizer=distance", f"regularizer.distance.beta={beta}", "train.checkpoint_every=1",
                      "train.keep_checkpoints=3")
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    rows = log(tmp_path / "ft")
    assert rows[0]["distance_penalty"] == 0.0  # the first step starts at the base weights
    base = base_weights()
    for row in rows[1:]:
        # Step k's penalty is taken on the weights after step k - 1, which checkpoint k - 1 holds.
        before = load_file(tmp_path / "ft" / "checkpoints" / f"checkpoint-{row['step'] - 1}" / "model.safetensors")
        direct = beta * sum(((before[k] - base[k]) ** 2).sum().item() for k in before)
        assert row["distance_penalty"] == pytest.approx(direct, rel=1e-4)
        assert row["loss"] == pytest.approx(row["fingerprint_loss"] + row["distance_penalty"], rel=1e-4)


def test_penalty_gradient_is_two_beta_times_the_difference():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    base = torch.tensor([0.5, 0.0, 3.0])
    value = distance.squared({"p": p}, {"p": base})
    value.backward()
    assert value.item() == pytest.approx(0.25 + 4.0)
    assert torch.allclose(p.grad, 2 * (p.detach() - base))


def test_a_large_beta_keeps_the_weights_closer_to_base(tmp_path):
    gen = fake_fingerprints(tmp_path / "gen", make_config())
    base = base_weights()
    moved = {}
    for beta in (0, 100):
        out = tmp_path / f"beta{beta}"
        train(make_config(*QUICK, "regularizer=distance", f"regularizer.distance.beta={beta}"), gen, out)
        w = saved_weights(out)
        moved[beta] = sum(((w[k] - base[k]) ** 2).sum().item() for k in base) ** 0.5
    assert moved[100] < 0.5 * moved[0], moved
