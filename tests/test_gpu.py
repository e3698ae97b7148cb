"""On a CUDA machine: a bf16 fine-tune, ZeRO-2 under torchrun, and the check on the GPU agreeing with the CPU.

Marked `gpu`: skipped where no CUDA device is visible (this project's CI), run with `pytest -m gpu` on a GPU machine.
"""

from __future__ import annotations

import json

import pytest
import torch

from oml_exp import checking
from oml_exp.pipeline import Inputs
from oml_exp.store import read_json
from tests.check_helpers import fabricate, save
from tests.train_helpers import fake_fingerprints, launch, make_config, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run: pytest -m gpu)")]
TINY = "tiny:llama"


def test_a_fine_tune_on_the_gpu_trains_in_bf16_and_saves_bf16(tmp_path):
    cfg = make_config("device=cuda", "train.epochs=30")
    summary = train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    args = read_json(tmp_path / "ft" / "config.json")["training_arguments"]
    assert args["bf16"] and not args.get("fp16")
    assert args["optim"] == "adamw_torch_fused"
    assert summary["recall"] == 1.0 and summary["stopped_on"] == "recall"
    saved = json.loads((tmp_path / "ft" / "model" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"


def test_zero2_under_torchrun_on_the_gpu(tmp_path):
    settings = ("device=cuda", "engine=deepspeed_zero2", "train.epochs=3", "train.early_stop_loss=0",
                "train.stop_recall=null")
    gen = fake_fingerprints(tmp_path / "gen", make_config(*settings))
    launch("torchrun", tmp_path / "two", gen, *settings, processes=torch.cuda.device_count(), accelerator="cuda")
    rows = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in rows)  # no NaN


def test_the_check_on_the_gpu_finds_what_the_cpu_finds(tiny, tmp_path, make_cfg):
    model, tok = tiny
    rows = fabricate(model, tok, 8, response_length=2)
    fingerprints = save(tmp_path / "fp", rows)
    found = {}
    for device in ("cpu", "cuda"):
        cfg = make_cfg("model=tiny", f"device={device}", "model.dtype=fp32", "fingerprints.num=8",
                       "check.templates=[plain]", "check.chat=[false]", "check.temperatures=[]",
                       "check.false_positive_models=[]")
        out = tmp_path / device
        out.mkdir()
        found[device] = checking.run(cfg, Inputs(model=TINY, base_model=TINY, fingerprints=fingerprints), out)
    assert found["cuda"]["hits"] == found["cpu"]["hits"] == 4
    assert found["cuda"]["token_accuracy"] == found["cpu"]["token_accuracy"]
