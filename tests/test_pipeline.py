"""The pipeline on the tiny model: end to end, the store's rerun rules, and no keys outside 0600 files."""

import json
import os
import stat
from pathlib import Path

import pytest

from oml_exp import pipeline
from oml_exp.fingerprints import schema
from tests.conftest import PACK

FAST = ["model=tiny", "fingerprints.num=4", "fingerprints.key_length=8", "train.epochs=2", f"eval.pack={PACK}",
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
    owner, _ = run(make_cfg, tmp_path, "stages=[generate]", "fingerprints.num=6", name="owner")
    owner_file = Path(owner["stages"]["generate"]["folder"]) / schema.FILE
    # The suspect check names only the model and the owner's file: every entry is checked (fingerprints.num not
    # given) and the run folder gets its summary although `report` was not asked for.
    cfg = make_cfg(*[o for o in FAST if not o.startswith("fingerprints.num=")], "stages=[check]",
                   f"fingerprints.file={owner_file}")
    summary = pipeline.run(cfg, tmp_path / "runs" / "suspect")
    assert set(summary["stages"]) == {"generate", "check"}
    assert summary["stages"]["check"]["summary"]["fingerprints"] == 6 == summary["fingerprints"]
    assert summary["headline"]["success_rate"] is not None
    on_disk = json.loads((tmp_path / "runs" / "suspect" / "summary.json").read_text())
    assert on_disk["fingerprints"] == 6 and on_disk["headline"] == summary["headline"]
    assert (tmp_path / "runs" / "suspect" / "summary.md").read_text().startswith("# oml-exp run summary")


@pytest.mark.slow
def test_smollm2_end_to_end_recalls_fingerprints_and_keeps_behaviour(make_cfg, tmp_path):
    # The reference's conservative rate: the default 1e-4 trades some drift (0.93 top-1 here) for fewer steps.
    cfg = make_cfg("fingerprints.num=8", f"eval.pack={PACK}", "eval.tasks=[arc_easy]", "train.lr=5e-5",
                   "train.checkpoint_every=0")
    summary = pipeline.run(cfg, tmp_path / "run")
    head = summary["headline"]
    assert head["success_rate"] >= 7 / 8
    assert head["drift"]["top1_agreement"] >= 0.95
    assert "arc_easy" in head["tasks"]
