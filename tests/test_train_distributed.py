"""Multi-process training on the tiny model (2 processes, gloo) and a resume after a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oml_exp.store import read_json
from tests.train_helpers import (EQUIVALENCE, EQUIVALENCE_ATOL, WORKER, assert_same_weights, fake_fingerprints,
                                 launch, make_config, train, worker_env)

@pytest.mark.parametrize("launcher,engine", [("torchrun", "deepspeed_zero2"), ("deepspeed", "deepspeed_zero3"),
                                             ("torchrun", "torch")])
def test_two_processes_match_one(tmp_path, launcher, engine):
    settings = (*EQUIVALENCE, f"engine={engine}")
    gen = fake_fingerprints(tmp_path / "gen", make_config(*settings))
    one = train(make_config(*settings), gen, tmp_path / "one")
    launch(launcher, tmp_path / "two", gen, *settings)
    two = read_json(tmp_path / "two" / "train_set.json")
    assert len(two) == 8 and one["steps"] == 3
    assert [r["step"] for r in map(json.loads, (tmp_path / "two" / "log.jsonl").read_text().splitlines())] == [1, 2, 3]
    assert_same_weights(tmp_path / "one", tmp_path / "two", atol=EQUIVALENCE_ATOL)


def test_two_processes_stop_on_recall_at_the_same_step(tmp_path):
    # Every rank checks the whole set and they take the lowest count: a rank stopping alone would leave the other
    # waiting in the next step's all-reduce (a hang, here a timeout).
    settings = ("train.stop_recall=1.0", "train.recall_every=1", "train.early_stop_loss=0",
                "train.fingerprints_per_step=4", "train.lr=3e-2")
    gen = fake_fingerprints(tmp_path / "gen", make_config(*settings))
    ranks = launch("torchrun", tmp_path / "two", gen, *settings)
    assert len(ranks) == 2 and {r["steps"] for r in ranks} == {ranks[0]["steps"]}
    assert all(r["stopped_on"] == "recall" and r["recall"] == 1.0 for r in ranks)
    assert ranks[0]["steps"] < 30 * ranks[0]["steps_per_epoch"]


# Registered before oml-exp runs, so it runs after everything the run left for exit time (atexit is last in, first out).
PROBE = """import atexit, sys
import torch.distributed as dist
atexit.register(lambda: print("process group at exit:", dist.is_initialized()))
from oml_exp.__main__ import main
main()
"""


def test_cli_leaves_the_process_group_after_a_finished_run(tmp_path):
    # DeepSpeed makes a (one-rank gloo) group even without a launcher: the same exit path as under torchrun.
    cli = [sys.executable, "-c", PROBE, f"paths.output_dir={tmp_path}", "model=tiny", "engine=deepspeed_zero2",
           "stages=[finetune]", "strategy=random_word", "fingerprints.num=2", "fingerprints.pool_size=4",
           "fingerprints.key_length=8", "train.epochs=1"]
    done = subprocess.run(cli, env=worker_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "process group at exit: False"


def saved_step(folder: Path) -> int:
    steps = [int(p.name.split("-")[-1]) for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(steps, default=0)


def test_sigkilled_run_resumes_to_the_same_weights_and_steps(tmp_path):
    settings = ("train.epochs=100", "train.early_stop_loss=0", "train.stop_recall=null", "train.checkpoint_every=1",
                "train.lr=1e-3")
    gen = fake_fingerprints(tmp_path / "gen", make_config(*settings))
    whole = train(make_config(*settings), gen, tmp_path / "whole")

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, WORKER, str(out), str(gen), *settings],
                            env=worker_env(), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr", "w"),
                            start_new_session=True)
    deadline = time.time() + 120
    # Older checkpoints are pruned as newer ones land: wait for any at step 5 or later.
    while saved_step(out / "checkpoints") < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {(tmp_path / 'stderr').read_text()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # Rerun as a user would, in a fresh process (an earlier in-process DeepSpeed run leaves accelerate state behind).
    rerun = subprocess.run([sys.executable, WORKER, str(out), str(gen), *settings], env=worker_env(),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert resumed["resumed_from_step"] >= 5
    assert resumed["steps"] == whole["steps"] == 100
    assert_same_weights(tmp_path / "whole", out, atol=1e-6)
