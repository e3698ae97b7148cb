"""A tiny run logged to W&B offline, read back from its .wandb file: the training curve as history, the config as
nested keys, a readable name, the headline numbers as summary, and no fingerprint key anywhere."""

import json
import struct
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from oml_exp import pipeline
from oml_exp.fingerprints import schema

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of checksummed, possibly split records
TINY = ["model=tiny", "device=cpu", "logger=wandb", "fingerprints.num=4", "fingerprints.key_length=8",
        "train.epochs=3", "stages=[generate,finetune,check,report]", "check.temperatures=[]", "check.fp_sampling=[]"]


def records(path: Path):
    """Every record of an offline run's .wandb file, as the SDK wrote it."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of a split one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def logged(run_dir: Path) -> dict:
    """The run record, history rows and final summary of the run folder's one offline W&B run."""
    (path,) = run_dir.glob("wandb/offline-run-*/*.wandb")
    out = {"history": [], "summary": {}, "bytes": path.read_bytes()}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "history":
            out["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                                   for i in record.summary.update})
    return out


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The same tiny job twice: the second takes its fine-tune from the store."""
    from tests.conftest import compose_config

    root = tmp_path_factory.mktemp("wandb")
    cfg = compose_config(TINY, root)
    return root, [pipeline.run(cfg, root / "runs" / name) for name in ("first", "cached")]


def test_the_training_curve_is_the_runs_history(tiny_runs):
    root, (first, cached) = tiny_runs
    steps = [json.loads(line) for line in
             (Path(first["stages"]["finetune"]["folder"]) / "log.jsonl").read_text().splitlines()]
    assert cached["stages"]["finetune"]["skipped"], "the second run reused the fine-tune"
    for name in ("first", "cached"):
        history = logged(root / "runs" / name)["history"]
        assert [row["_step"] for row in history] == [s["step"] for s in steps]
        assert [row["train/loss"] for row in history] == pytest.approx([s["loss"] for s in steps])
        assert all({"train/learning_rate", "train/grad_norm"} <= row.keys() for row in history)


def test_the_config_is_nested_and_the_run_named_by_its_setting(tiny_runs):
    root, (first, _) = tiny_runs
    run = logged(root / "runs" / "first")["run"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["model"]["name"] == "tiny", "a section is a nested mapping, not a flattened string"
    assert config["train"]["epochs"] == 3
    assert run.display_name == "perinucleus-4-none-s0"


def test_the_summary_holds_the_headline_with_its_interval(tiny_runs):
    root, (first, _) = tiny_runs
    summary = logged(root / "runs" / "first")["summary"]
    assert summary["success_rate"] == first["headline"]["success_rate"]
    assert 0.0 <= summary["success_ci_lo"] <= summary["success_rate"] <= summary["success_ci_hi"] <= 1.0
    assert summary["heldout_success_ci_hi"] <= 1.0
    assert summary["train_steps"] == first["headline"]["train_steps"]
    assert summary["finetune/steps"] == first["stages"]["finetune"]["summary"]["steps"], "and the stage metrics"


def test_no_key_reaches_wandb(tiny_runs):
    root, (first, _) = tiny_runs
    rows = schema.load(first["stages"]["generate"]["folder"])
    secrets = {r["key"] for r in rows} | {r["effective_key"] for r in rows}
    for path in (root / "runs").rglob("wandb/**/*"):
        if path.is_file():
            assert not any(s.encode() in path.read_bytes() for s in secrets), path
