"""The pipeline on the tiny model: end to end, the store's rerun rules, and no keys outside 0600 files."""

import json
import os
import stat

import pytest

from oml_exp import pipeline
from oml_exp.fingerprints import schema

FAST = ["model=tiny", "fingerprints.num=4", "fingerprints.key_length=8", "train.epochs=2",
        "eval.limit=4", "eval.tasks=[arc_easy]", "eval.drift_texts=2", "eval.drift_tokens=8"]


def run(make_cfg, tmp_path, *overrides, name="run"):
    cfg = make_cfg(*FAST, *overrides)
    summary = pipeline.run(cfg, tmp_path / "runs" / name)
    return summary, {stage: s["skipped"] for stage, s in summary["stages"].items()}


def test_tiny_end_to_end_writes_summaries_and_keeps_keys_secret(make_cfg, tmp_path):
    summary, skipped = run(make_cfg, tmp_path)
    assert set(skipped) == {"generate", "finetune", "check", "evaluate_base", "evaluate"}
    assert not any(skipped.values())
    run_dir = tmp_path / "runs" / "run"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["headline"]["success_rate"] is not None
    assert "drift" in on_disk["headline"]
    assert (run_dir / "summary.md").read_text().startswith("# oml-exp run summary")

    keys = [row["key"] for row in schema.load(summary["stages"]["generate"]["folder"])]
    effective = [row["effective_key"] for row in schema.load(summary["stages"]["generate"]["folder"])]
    for path in tmp_path.rglob("*"):
        if not path.is_file() or path.suffix not in {".json", ".jsonl", ".md", ".txt", ".log"}:
            continue
        text = path.read_text(errors="ignore")
        if any(k in text for k in keys + effective):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, f"{path} holds keys but is readable by others"


def test_rerun_rules(make_cfg, tmp_path):
    _, first = run(make_cfg, tmp_path)
    assert not any(first.values())
    _, same = run(make_cfg, tmp_path, name="same")
    assert all(same.values()), "an identical run must reuse every stage"
    assert (tmp_path / "runs" / "same" / "summary.json").exists(), "a skipped run still writes its summary"

    _, check_only = run(make_cfg, tmp_path, "check.batch_size=3", name="check")
    assert check_only == {"generate": True, "finetune": True, "check": False, "evaluate_base": True,
                          "evaluate": True}

    _, logger = run(make_cfg, tmp_path, "logger.project=elsewhere", name="logger")
    assert all(logger.values()), "the logger never changes a stage's output"

    _, seed = run(make_cfg, tmp_path, "seed=1", name="seed")
    # The base model's scores do not depend on the seed: they stay shared by every run on that model.
    assert seed == {"generate": False, "finetune": False, "check": False, "evaluate_base": True, "evaluate": False}

    _, forced = run(make_cfg, tmp_path, "force=true", name="force")
    assert not any(forced.values())


def test_checking_a_given_model_needs_no_training(make_cfg, tmp_path):
    summary, skipped = run(make_cfg, tmp_path, "stages=[check]")
    assert set(skipped) == {"generate", "check"}
    assert summary["headline"]["success_rate"] is not None


@pytest.mark.slow
def test_smollm2_end_to_end_recalls_fingerprints_and_keeps_behaviour(make_cfg, tmp_path):
    # The reference's conservative rate: the default 1e-4 trades some drift (0.93 top-1 here) for fewer steps.
    cfg = make_cfg("fingerprints.num=8", "eval.limit=10", "eval.tasks=[arc_easy]", "train.lr=5e-5",
                   "train.checkpoint_every=0")
    summary = pipeline.run(cfg, tmp_path / "run")
    head = summary["headline"]
    assert head["success_rate"] >= 7 / 8
    assert head["drift"]["top1_agreement"] >= 0.95
    assert "arc_easy" in head["tasks"]
