"""Every store entry records a manifest of its files; a damaged or hand-edited entry is refused, force=true rebuilds."""

import json
import subprocess
import sys

import pytest

from oml_exp import manifest, pipeline

from .conftest import ROOT, subprocess_env

FAST = ["model=tiny", "fingerprints.num=2", "fingerprints.key_length=8", "train.epochs=2"]


def test_manifest_catches_missing_truncated_and_edited_files(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "HASHED_UP_TO", 100)
    entry = tmp_path / "entry"
    (entry / "model").mkdir(parents=True)
    (entry / "small.json").write_text('{"a": 1}')
    (entry / "model" / "weights").write_bytes(bytes(200))
    manifest.write(entry)
    manifest.check(entry)

    (entry / "small.json").write_text('{"a": 2}')  # same size, other bytes
    with pytest.raises(manifest.DamagedEntryError, match="small.json was changed"):
        manifest.check(entry)
    (entry / "small.json").write_text('{"a": 1}')

    (entry / "model" / "weights").write_bytes(bytes([1]) * 200)  # large files are checked by size only
    manifest.check(entry)
    (entry / "model" / "weights").write_bytes(bytes(150))
    with pytest.raises(manifest.DamagedEntryError, match="model/weights has 150 bytes, 200 when it was built"):
        manifest.check(entry)
    (entry / "model" / "weights").unlink()
    with pytest.raises(manifest.DamagedEntryError, match="model/weights is missing"):
        manifest.check(entry)
    (entry / manifest.MANIFEST).unlink()
    with pytest.raises(manifest.DamagedEntryError, match="no manifest.json"):
        manifest.check(entry)


def run(make_cfg, tmp_path, *overrides, name="run"):
    summary = pipeline.run(make_cfg(*FAST, *overrides), tmp_path / "runs" / name)
    return summary, {stage: s["skipped"] for stage, s in summary["stages"].items()}


def test_a_truncated_model_is_refused_and_force_rebuilds_it(make_cfg, tmp_path):
    summary, _ = run(make_cfg, tmp_path, "stages=[finetune]")
    entry = summary["stages"]["finetune"]["folder"]
    recorded = json.loads((tmp_path / entry / manifest.MANIFEST).read_text())["files"]
    # Checkpoints are pruned (train.keep_checkpoints=0) before the manifest is written, so reuse finds what it lists.
    assert "model/model.safetensors" in recorded and not any(f.startswith("checkpoints/") for f in recorded)
    assert all(run(make_cfg, tmp_path, "stages=[finetune]", name="same")[1].values())

    weights = tmp_path / entry / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(manifest.DamagedEntryError) as err:
        run(make_cfg, tmp_path, "stages=[finetune]", name="damaged")
    assert str(entry) in str(err.value) and "force=true" in str(err.value) and "\n" not in str(err.value)

    _, forced = run(make_cfg, tmp_path, "stages=[finetune]", "force=true", name="force")
    assert forced == {"generate": False, "finetune": False}
    assert all(run(make_cfg, tmp_path, "stages=[finetune]", name="after")[1].values())


def test_hand_edited_fingerprints_are_refused_with_one_line(make_cfg, tmp_path, monkeypatch):
    summary, _ = run(make_cfg, tmp_path, "stages=[generate]")
    fingerprints = tmp_path / summary["stages"]["generate"]["folder"] / "fingerprints.json"
    rows = json.loads(fingerprints.read_text())
    rows[0]["key_ids"], rows[1]["key_ids"] = rows[1]["key_ids"], rows[0]["key_ids"]  # same size: only a digest sees it
    fingerprints.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")

    cli = subprocess.run([sys.executable, "-m", "oml_exp", *FAST, "stages=[generate]", f"paths.output_dir={tmp_path}"],
                         cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert cli.returncode == 1, cli.stderr[-2000:]
    errors = [line for line in cli.stderr.splitlines() if line.startswith("oml-exp: error:")]
    assert len(errors) == 1 and "fingerprints.json was changed" in errors[0] and "force=true" in errors[0]
    assert "Traceback" not in cli.stderr

    monkeypatch.setenv("RANK", "1")  # a rank > 0 of a launch refuses it too, instead of training on it
    with pytest.raises(manifest.DamagedEntryError):
        run(make_cfg, tmp_path, "stages=[generate]", name="rank1")
