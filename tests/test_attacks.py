"""The attack stage on the tiny model: every attack really changes the model, each attacked model is a store entry
checked (and evaluated) like the fingerprinted one, and bad attack settings fail in one line before any stage."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import torch

from oml_exp import models, pipeline
from oml_exp.attacks import quantize, stage
from oml_exp.reporting import sweep
from oml_exp.config import ConfigError
from oml_exp.fingerprints import schema
from tests.conftest import PACK, compose_config

ALL = ["sft", "sft_lora", "merge", "merge_ties", "quantize", "quantize_int4", "prune", "distill"]
FAST = ["model=tiny", "device=cpu", "fingerprints.num=8", "fingerprints.key_length=8", "train.lr=5e-3",
        f"eval.pack={PACK}", "eval.limit=4", "eval.tasks=[arc_easy]", "eval.drift_texts=2", "eval.drift_tokens=8",
        "check.temperatures=[]", "check.fp_sampling=[]", "check.chat=[]",
        # Strong enough on the tiny model that the loss and the weights visibly move in a few steps.
        "attack.sft.steps=6", "attack.sft.lr=1e-3", "attack.sft_lora.steps=4", "attack.sft_lora.lr=1e-2",
        "attack.distill.steps=4", "attack.distill.lr=1e-3"]


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """One run with every attack, then the same run again (everything from the store)."""
    root = tmp_path_factory.mktemp("attacks")
    cfg = compose_config([*FAST, f"attack=[{','.join(ALL)}]", "stages=[generate,finetune,attack,check,evaluate]"],
                         root)
    first = pipeline.run(cfg, root / "runs" / "first")
    again = pipeline.run(cfg, root / "runs" / "again")
    return root, first, again


def test_every_attack_changes_the_weights_and_is_checked_and_evaluated(attacked):
    _, summary, _ = attacked
    attacks = summary["headline"]["attacks"]
    assert set(attacks) == set(ALL)
    for name, row in attacks.items():
        assert row["weight_change"]["relative_l2"] > 0, name
        assert row["weight_change"]["changed"] > 0, name
        assert row["success_rate"] is not None, name  # checked
        assert "mean" in row and "drift" in row, name  # evaluated against the base model's scores
    stages = summary["stages"]
    for name in ALL:
        assert {f"attack/{name}", f"check/{name}", f"evaluate/{name}"} <= stages.keys()
    # Each attacked model is checked as its own model: a check entry of its own.
    assert len({stages[f"check/{n}"]["hash"] for n in ALL} | {stages["check"]["hash"]}) == len(ALL) + 1


def test_training_attacks_lower_their_loss(attacked):
    _, summary, _ = attacked
    for name in ("sft", "sft_lora", "distill"):
        row = summary["headline"]["attacks"][name]
        assert row["final_loss"] < row["first_loss"], name
        assert row["tokens"] > 0


def test_prune_zeroes_its_fraction_and_quantize_stores_what_it_serves(attacked):
    _, summary, _ = attacked
    prune = summary["stages"]["attack/prune"]["summary"]
    assert prune["zeroed"] == pytest.approx(0.2, abs=0.01)
    q = summary["stages"]["attack/quantize_int4"]["summary"]
    assert q["stored"] == "dequantized" and q["quantized_layers"] > 0
    assert summary["headline"]["attacks"]["quantize_int4"]["weight_change"]["relative_l2"] > \
        summary["headline"]["attacks"]["quantize"]["weight_change"]["relative_l2"]  # 4 bits move more than 8


def test_a_rerun_takes_every_attack_from_the_store(attacked):
    _, first, again = attacked
    for name, s in again["stages"].items():
        assert s["skipped"], name
        assert s["hash"] == first["stages"][name]["hash"]


def test_the_ties_partner_is_a_fine_tune_of_the_base_kept_in_the_store(attacked):
    _, summary, _ = attacked
    partner = summary["stages"]["attack/merge_ties/partner"]
    assert partner["summary"]["kind"] == "sft"
    record = json.loads((Path(summary["stages"]["attack/merge_ties"]["folder"]) / "stage.json").read_text())
    assert record["key"]["upstream"]["partner"] == partner["hash"]
    assert record["key"]["model"].startswith("finetune:")


def test_no_key_reaches_an_attack_folder_or_the_summary(attacked):
    root, summary, _ = attacked
    rows = schema.load(summary["stages"]["generate"]["folder"])
    secrets = [r["key"] for r in rows] + [r["effective_key"] for r in rows]
    for path in list(root.rglob("attack/*/*.json")) + list(root.rglob("runs/*/summary.*")):
        text = path.read_text()
        assert not any(s in text for s in secrets), path


def test_the_sweep_report_tabulates_and_plots_survival_per_attack(attacked):
    root, _, _ = attacked
    files = sweep.run(root / "runs", root / "report")
    table = pd.read_csv(files["persistence_csv"])
    assert sorted(table["attack"]) == sorted(ALL)  # the rerun's rows are the same models: counted once
    assert (table["success_lo"] <= table["success"]).all() and (table["success"] <= table["success_hi"]).all()
    assert set(table["measure"]) == {"tokens", "weight", "bits", "fraction"}
    assert files["persistence"].stat().st_size > 10_000
    report = files["markdown"].read_text()
    assert "## Persistence" in report and "| prune | prune | fraction 0.2 |" in report


def test_quantized_model_stored_dequantized_computes_what_the_quantized_one_serves():
    model, _ = models.load("tiny:llama", "cpu", "float32")
    stored, _ = models.load("tiny:llama", "cpu", "float32")
    served = quantize.quantized(model, 4)
    stored.load_state_dict(quantize.dequantized(served), strict=False)
    ids = torch.arange(5, 37).view(2, 16)
    with torch.no_grad():
        assert torch.allclose(stored(ids).logits, served(ids).logits, atol=1e-5)


def test_attack_prompts_are_disjoint_from_the_drift_and_benign_prompts():
    data = resources.files("oml_exp.data")
    attack, drift, benign = (set(json.loads(data.joinpath(f).read_text()))
                             for f in ("attack_prompts.json", "drift_prompts.json", "benign_prompts.json"))
    assert len(attack) >= 100
    assert not attack & drift and not attack & benign


@pytest.mark.parametrize("overrides, message", [
    (["attack=merge", "attack.merge.partner_model=tiny:gpt_neox"], "has another architecture than model.path"),
    (["attack=merge", "attack.merge.method=slerp"], "is not one of linear"),
    (["attack=merge_ties", "attack.merge_ties.partner_model=base"], "set attack.merge_ties.partner_model=sft"),
    (["attack=prune", "attack.prune.fraction=1.5"], "attack.prune.fraction must be in (0, 1)"),
    (["attack=quantize", "attack.quantize.bits=3"], "attack.quantize.bits=3 is not one of (8, 4)"),
    (["attack=sft", "attack.sft.data=/nonexistent/pairs.jsonl"], "is not a file"),
    (["attack=sft", "attack.sft.stpes=3"], "attack.sft.stpes is not a parameter of SFT"),
    (["attack.sft.steps=3"], "attack.sft is set but that attack is not picked"),
    (["attack=sft_lora", "engine=deepspeed_zero3"], "does not run under engine=deepspeed_zero3"),
])
def test_bad_attack_settings_fail_in_one_line_before_any_stage(make_cfg, tmp_path, overrides, message):
    cfg = make_cfg(*FAST[:4], *overrides)
    with pytest.raises(ConfigError) as err:
        pipeline.run(cfg, tmp_path / "run")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "stages").exists()


def test_sft_trains_on_a_users_alpaca_file(tmp_path):
    rows = [{"instruction": f"Name a colour, number {i}.", "input": "", "output": "Blue."} for i in range(6)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_config([*FAST[:4], "attack=sft", f"attack.sft.data={data}", "attack.sft.steps=2",
                          "stages=[attack]"], tmp_path)
    summary = pipeline.run(cfg, tmp_path / "run")
    attack = summary["stages"]["attack/sft"]["summary"]
    assert attack["examples"] == 6 and attack["steps"] == 2 and attack["data"] == str(data)


def test_weight_change_is_zero_for_the_same_model():
    same = stage.weight_change(models.resolve("tiny:llama"), Path(models.resolve("tiny:llama")))
    assert same == {"relative_l2": 0.0, "changed": 0.0}
