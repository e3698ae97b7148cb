"""The benchmark scripts run end to end on the tiny model and print their figures.

They are the only way the speed targets are measured and they are run rarely (a GPU session may have minutes), so an
API change that breaks one must fail here, not on the device.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_train_reports_recall_drift_and_the_gemm_ratio(tmp_path):
    out = tmp_path / "bench.json"
    bench("bench_train.py", "--parts", "recipes", "--model", "tiny:llama", "--num", "8", "--recipe",
          "new=train.lr=3e-3", "--drift-texts", "2", "--store", str(tmp_path / "store"), "--json", str(out),
          "--peak-tflops", "1", cwd=tmp_path)
    new = json.loads(out.read_text())["recipes"]["new"]
    assert new["exact_recall"] == 1.0 and new["stopped_on"] == "recall"
    assert new["device"] == "cpu" and new["dtype"] == "float32"
    assert new["tokens_per_s"] > 0 and new["seconds_over_gemm_floor"] > 1
    assert 0 < new["share_of_peak"] < 1 and 0 < new["top1_agreement"] <= 1


def test_bench_generate_prints_ratios_to_the_floor_and_to_the_old_path(tmp_path):
    text = bench("bench_generate.py", "--model", "tiny:llama", "--keys", "16", "--today-keys", "8", "--repeats", "1",
                 cwd=tmp_path)
    assert "identical responses for 8/8 keys" in text
    assert re.search(r"median: new/floor [\d.]+x, today/floor [\d.]+x, today/new [\d.]+x", text)


def test_bench_check_prints_the_batched_check_against_its_floor_for_all_templates(tmp_path):
    text = bench("bench_check.py", "--model", "tiny:llama", "--num", "4", "--repeats", "1", "--max-templates", "all",
                 "--chat", "false", "--generate-subset", "2", "--response-lengths", "1", "--sampling", cwd=tmp_path)
    assert re.search(r"4 fingerprints x \d+ variants", text)
    row = next(line.split() for line in text.splitlines() if line.strip().startswith("1 "))
    assert row[4].endswith("x") and float(row[4][:-1]) > 0
