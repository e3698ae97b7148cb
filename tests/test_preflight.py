"""Bad input fails at start, before any stage runs, in one line; a failed write leaves no store entry."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oml_exp import components, config, models, pipeline, preflight, store
from oml_exp.evaluation.tasks import EvalError
from oml_exp.fingerprints import schema
from tests.conftest import PACK, ROOT, local_task, subprocess_env

TINY = ["model=tiny", "fingerprints.key_length=8", f"eval.pack={PACK}"]


def entries(tmp_path, stage: str) -> list:
    """Everything in the store folder of `stage`: complete entries and partial ones (locks aside)."""
    folder = tmp_path / "stages" / stage
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def write_file(path, rows) -> str:
    path.write_text(json.dumps(rows))
    return str(path)


# --- the CLI: one line, exit 1, nothing in the store -----------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("model.path=./no/such/model", "model.path='./no/such/model': no such folder; check the path"),
    ("device=gpu", "device='gpu' is not a device; use device=auto, cpu, cuda or cuda:N"),
    ("regularizer.distance.beta=1", "regularizer.distance is set but that regularizer is not picked; pick it: "
                                    "regularizer=distance"),
    ("stages=[check]", "stages=[check] without fingerprints.file would check fresh keys no model was trained on; "
                       "checking a suspect model needs the owner's fingerprints: fingerprints.file=PATH"),
    ("eval.tasks=[boolqq]", "eval.tasks: 'boolqq' is not an lm-eval task (nor one of suite local's: hellaswag, "
                            "arc_easy, arc_challenge, piqa, "),
])
def test_cli_refuses_bad_input_in_one_line_before_any_stage(tmp_path, override, message):
    done = subprocess.run([sys.executable, "-m", "oml_exp", *TINY, override, f"paths.output_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # one line, no traceback
    assert done.stderr.startswith(f"oml-exp: error: {message}")
    assert not (tmp_path / "stages").exists(), "no stage ran"


# --- the preflight checks, called directly ---------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, error, message", [
    (["model.path=nobody/no-such-model"], models.ModelError,
     "not a local folder, and not in the local cache and HF_HUB_OFFLINE=1"),
    (["model.path=/no/such/folder"], models.ModelError, "no such folder"),
    (["model.path='~/no/such/folder'"], models.ModelError, "no such folder"),
    (["check.false_positive_models=[base,./missing]"], models.ModelError,
     "check.false_positive_models='./missing': no such folder"),
    (["strategy.generator=nobody/generator"], models.ModelError, "strategy.generator='nobody/generator': not a local"),
    (["strategy=english", "strategy.english.writer=./gone"], models.ModelError, "strategy.english.writer='./gone'"),
    (["device=cuda:x"], config.ConfigError, "device='cuda:x' is not a device"),
    (["strategy.name=bogus"], config.ConfigError, "strategy.name='bogus' cannot be set; pick a strategy with "
                                                  "strategy=NAME"),
    (["strategy=random_word", "strategy.name=perinucleus"], config.ConfigError, "strategy.name='perinucleus'"),
    (["fingerprints.key_length=600"], config.ConfigError,
     "fingerprints.key_length=600 plus the response makes 601 tokens, more than the 512 positions of "
     "model.path='tiny:llama'"),
    (["fingerprints.key_length=511", "fingerprints.eos=true"], config.ConfigError,
     "makes 513 tokens, more than the 512"),
    (["stages=[check]"], config.ConfigError, r"needs the owner's fingerprints: fingerprints.file=PATH"),
    (["stages=[evaluate]", "eval.tasks=[arc_easy,no_such_task]"], EvalError, "no_such_task"),
    (["stages=[evaluate]", f"eval.pack={PACK.parent / 'bad_packs' / 'wrong_schema'}", "eval.tasks=[arc_easy]"],
     EvalError, "arc_easy/test.jsonl:2: not the arc_easy schema"),
    (["stages=[evaluate]", f"eval.pack={PACK.parent / 'bad_packs' / 'wrong_schema'}", "eval.tasks=[piqa]"],
     EvalError, "piqa/test.jsonl: missing"),
    (["stages=[evaluate]", "eval=tinybenchmarks", "eval.pack=null"], EvalError, "cannot be reached from here"),
    (["stages=[evaluate]", "eval.tasks=[boolq]"], EvalError,
     "boolq read aps/super_glue from the Hugging Face Hub, which cannot be reached from here"),
    (["eval.include_path=/no/such/folder"], config.ConfigError, "eval.include_path='/no/such/folder' is not a folder"),
    (["regularizer=distance", "engine=deepspeed_zero3"], config.ConfigError, "does not run under .*ZeRO-3"),
    (["regularizer=[averaging,lora]", "engine=deepspeed_zero3_offload"], config.ConfigError, "regularizer lora"),
])
def test_preflight_refuses(make_cfg, overrides, error, message):
    with pytest.raises(error, match=message):
        preflight.check(make_cfg(*TINY, *overrides))


def test_preflight_accepts_what_runs(make_cfg, tmp_path):
    preflight.check(make_cfg(*TINY, "fingerprints.key_length=510", "check.false_positive_models=[base,tiny:mistral]"))
    preflight.check(make_cfg(*TINY, "stages=[generate,check]"))  # fresh keys on the base, asked for
    preflight.check(make_cfg(*TINY, "regularizer=averaging", "engine=deepspeed_zero3"))
    folder = models.resolve("tiny:llama")
    preflight.check(make_cfg(*TINY, f"model.path={folder}", "stages=[generate]"))


def test_a_task_yaml_whose_data_file_is_missing_is_refused(make_cfg, tmp_path):
    name = local_task(tmp_path, data=tmp_path / "gone.jsonl")
    with pytest.raises(EvalError, match=f"{tmp_path / 'gone.jsonl'}: missing \\(task {name} loads it"):
        preflight.check(make_cfg(*TINY, "stages=[evaluate]", f"eval.include_path={tmp_path}", f"eval.tasks=[{name}]"))


def test_a_hub_id_in_the_local_cache_passes_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "models--someone--cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--someone--cached" / "refs").mkdir()
    (tmp_path / "models--someone--cached" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    models.check_spec("someone/cached")
    with pytest.raises(models.ModelError, match="someone/other.*HF_HUB_OFFLINE=1"):
        models.check_spec("someone/other")


def test_a_false_positive_model_with_another_tokenizer_is_refused(make_cfg, tmp_path):
    other = tmp_path / "other"
    tokenizer = models.load_tokenizer("tiny:llama")
    tokenizer.add_tokens(["<not_in_the_fingerprinted_vocabulary>"])
    tokenizer.save_pretrained(other)
    (other / "config.json").write_text((Path(models.resolve("tiny:llama")) / "config.json").read_text())
    with pytest.raises(config.ConfigError, match="another tokenizer than model.path"):
        preflight.check(make_cfg(*TINY, f"check.false_positive_models=[base,{other}]"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_fix(make_cfg):
    with pytest.raises(models.ModelError, match="no CUDA device is visible; use device=cpu or device=auto"):
        preflight.check(make_cfg(*TINY, "device=cuda:0"))


@pytest.mark.parametrize("overrides, refused", [
    (["regularizer.distance.beta=1"], True),
    (["regularizer=averaging", "regularizer.lora.rank=4"], True),
    (["regularizer=distance", "regularizer.distance.beta=1"], False),
    (["regularizer=[averaging,distance]", "regularizer.distance.beta=1"], False),
    (["fingerprints.num=4"], False),
])
def test_a_regularizer_parameter_needs_the_regularizer_picked(make_cfg, overrides, refused):
    if refused:
        refused = "is set but that regularizer is not picked; pick it: regularizer="
        with pytest.raises(config.ConfigError, match=refused):
            components.expanded(make_cfg(*overrides))
    else:
        components.expanded(make_cfg(*overrides))


# --- fingerprint files --------------------------------------------------------------------------------------------

def test_keys_file_responses_are_used_as_given(make_cfg, tmp_path):
    given = [{"key": key, "signature": response} for key, response in
             [("alpha one", " yes"), ("bravo two", " the"), ("charlie three", " and")]]
    keys_file = write_file(tmp_path / "keys.json", given)
    cfg = make_cfg(*TINY, "stages=[generate]", "strategy=custom", f"strategy.keys_file={keys_file}",
                   "fingerprints.num=3")
    summary = pipeline.run(cfg, tmp_path / "run")
    rows = schema.load(summary["stages"]["generate"]["folder"])
    tokenizer = models.load_tokenizer("tiny:llama")
    assert [r["response"] for r in rows] == [g["signature"] for g in given]
    assert [tokenizer.decode(r["response_ids"]) for r in rows] == [g["signature"] for g in given]
    assert [r["key"] for r in rows] == [g["key"] for g in given]


def test_keys_file_with_some_responses_missing_fails_before_generation(make_cfg, tmp_path):
    keys_file = write_file(tmp_path / "keys.json", [{"key": "a", "response": " b"}, {"key": "c"}])
    with pytest.raises(schema.FingerprintFileError, match="keys.json: entry 1 has no response"):
        preflight.check(make_cfg(*TINY, "strategy=custom", f"strategy.keys_file={keys_file}", "fingerprints.num=2"))


def test_a_short_fingerprint_file_fails_before_any_stage(make_cfg, tmp_path):
    path = write_file(tmp_path / "fp.json", [{"key": "a", "response": " b"}])
    with pytest.raises(schema.FingerprintFileError, match="holds 1 entries, fewer than the 2 asked for"):
        preflight.check(make_cfg(*TINY, f"fingerprints.file={path}", "fingerprints.num=2"))


@pytest.mark.parametrize("overrides, num", [([], 16), (["fingerprints.file=FILE"], None),
                                            (["fingerprints.file=FILE", "fingerprints.num=3"], 3)])
def test_fingerprint_num_null_means_every_entry_of_a_file_else_the_default(make_cfg, tmp_path, overrides, num):
    path = write_file(tmp_path / "fp.json", [{"key": "a", "response": " b"}])
    cfg = make_cfg(*TINY, *[o.replace("FILE", path) for o in overrides])
    assert cfg.fingerprints.num in (None, 3)
    assert config.fingerprint_num(cfg.fingerprints) == num


# --- failed writes ---------------------------------------------------------------------------------------------------

def failing_write(monkeypatch, name: str, code: int):
    real = store._write_file

    def write(path, text, mode):
        if path.name.startswith(f".{name}.tmp-"):
            raise OSError(code, os.strerror(code))
        real(path, text, mode)
    monkeypatch.setattr(store, "_write_file", write)


@pytest.mark.parametrize("code, stage, name, cause", [
    (errno.EROFS, "generate", "fingerprints.json", "Read-only file system; make it writable"),
    (errno.ENOSPC, "check", "results.jsonl", "No space left on device; free disk space"),
])
def test_a_failed_write_names_path_and_cause_and_leaves_no_entry(make_cfg, tmp_path, monkeypatch, code, stage, name,
                                                                cause):
    failing_write(monkeypatch, name, code)
    cfg = make_cfg(*TINY, "fingerprints.num=4", "stages=[generate,check]", "check.templates=[plain]",
                   "check.chat=[false]", "check.temperatures=[]")
    where = re.escape(f"{tmp_path}/stages/{stage}/.partial-")
    with pytest.raises(store.WriteError, match=rf"^cannot write {where}\w+/{re.escape(name)}: {cause}"):
        pipeline.run(cfg, tmp_path / "run")
    assert entries(tmp_path, stage) == [], "neither a complete entry nor a partial folder"
    assert not list((tmp_path / "stages").rglob(f".{name}.tmp-*"))


# A raw OSError, as a model or checkpoint save raises it, injected into the store's writer of a real CLI process (in
# a child: Hydra's in-process logging would keep writing to pytest's closed capture streams).
FULL_DISK = """
import errno, os, sys
from oml_exp import store
def full_disk(path, text, secret=False):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
store.write_text = full_disk
from oml_exp.__main__ import main
sys.argv = ["oml-exp", *sys.argv[1:]]
main()
"""


def test_cli_reports_a_failed_write_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", FULL_DISK, *TINY, "stages=[generate]", "fingerprints.num=2",
                           f"paths.output_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"oml-exp: error: cannot write {tmp_path}/stages/generate/.partial-")
    assert line.endswith("fingerprints.json: No space left on device; free disk space, or set paths.output_dir to a "
                         "disk with room")
    assert entries(tmp_path, "generate") == []
