"""Every run gets its own run folder, also when two start in the same second; the ranks of a launch share one."""

import json
import os
import subprocess
import sys

from oml_exp import runs

from .conftest import ROOT, subprocess_env

PRINT_ID = [sys.executable, "-c", "from oml_exp import runs; print(runs.run_id())"]


def test_two_runs_started_together_keep_two_summaries(tmp_path):
    cmd = [sys.executable, "-m", "oml_exp", "model=tiny", "stages=[generate,report]", "fingerprints.num=2",
           "fingerprints.key_length=8", f"paths.output_dir={tmp_path}"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    summaries = sorted(tmp_path.glob("runs/*/*/summary.json"))
    assert len(summaries) == 2, logs
    assert len({json.loads(s.read_text())["stages"]["generate"]["folder"] for s in summaries}) == 1, "one store entry"
    assert {s.parent.name.rsplit("-", 1)[1] for s in summaries} == {str(p.pid) for p in procs}


def test_same_second_runs_differ_and_the_name_is_fixed_per_process():
    assert runs.name(1_700_000_000.2, 41) != runs.name(1_700_000_000.2, 42)
    assert runs.run_id() == runs.run_id()


def test_ranks_of_one_launch_share_the_folder_and_plain_runs_do_not():
    # Sibling processes with LOCAL_RANK set, as torchrun and the deepspeed launcher start them: named after the parent.
    env = {**subprocess_env(), "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2"}
    ranks = [subprocess.run(PRINT_ID, env={**env, "LOCAL_RANK": str(r), "RANK": str(r)}, cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip() for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0].endswith(f"-{os.getpid()}")

    plain = {k: v for k, v in subprocess_env().items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    alone = [subprocess.run(PRINT_ID, env=plain, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
             for _ in range(2)]
    assert alone[0] != alone[1]
