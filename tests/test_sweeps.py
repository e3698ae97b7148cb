"""A real multirun of a sweep file on the tiny model: killed midway, rerun, reported, and no key in W&B or the logs.

One sweep (2 jobs) is run once for the module: started, killed as soon as its first job has written its summary, and
rerun with the same command; a third run goes through the submitit local launcher.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from oml_exp.reporting.sweep import CSV, MARKDOWN, TRADEOFF_PNG

from .conftest import ROOT, subprocess_env
from .test_wandb_run import records

SWEEP_NAME = "scalability_cpu"
# Utility measurement is left out to keep this fast; the report's utility columns are tested on fixtures.
TINY = ["model=tiny", "strategy=random_word", "seed=0", "fingerprints.num=2,4", "fingerprints.pool_size=4",
        "fingerprints.key_length=8", "train.epochs=2", "stages=[generate,finetune,check,report]",
        "check.temperatures=[]", "check.fp_sampling=[]"]  # W&B (offline) is the sweep files' own default


def sweep_command(output_dir, *extra) -> list[str]:
    return [sys.executable, "-m", "oml_exp", "-m", "--config-dir", str(ROOT / "sweeps"), "--config-name", SWEEP_NAME,
            f"paths.output_dir={output_dir}", *TINY, *extra]


def job_summaries(sweep) -> dict[int, dict]:
    """Each finished job's summary by its number of fingerprints."""
    out = {}
    for path in sweep.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        out[summary["fingerprints"]] = summary
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    sweep = out / "sweeps" / SWEEP_NAME
    logs = []
    with open(out / "first.log", "w") as log:
        first = subprocess.Popen(sweep_command(out), cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        deadline = time.time() + 300
        while not job_summaries(sweep) and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    logs.append((out / "first.log").read_text())
    after_kill = job_summaries(sweep)
    finished_folders = {stage["folder"] for s in after_kill.values() for stage in s["stages"].values()}
    stamps = {f: os.stat(f).st_mtime_ns for f in finished_folders}

    rerun = subprocess.run(sweep_command(out), cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    logs.append(rerun.stdout + rerun.stderr)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after_rerun = job_summaries(sweep)
    submitit = subprocess.run(sweep_command(out, "hydra/launcher=submitit_local"), cwd=ROOT, env=subprocess_env(), capture_output=True,
                              text=True, timeout=600)
    logs.append(submitit.stdout + submitit.stderr)
    assert submitit.returncode == 0, submitit.stderr[-3000:]
    return {"out": out, "sweep": sweep, "after_kill": after_kill, "after_rerun": after_rerun, "stamps": stamps,
            "after_submitit": job_summaries(sweep), "logs": logs}


def test_killed_sweep_rerun_completes_without_redoing_finished_jobs(swept):
    assert len(swept["after_kill"]) == 1, "the sweep was killed after its first job and before its second"
    (done,) = swept["after_kill"]
    assert set(swept["after_rerun"]) == {2, 4}
    assert all(s["skipped"] for s in swept["after_rerun"][done]["stages"].values()), "a finished job was redone"
    assert {f: os.stat(f).st_mtime_ns for f in swept["stamps"]} == swept["stamps"]
    (killed,) = {2, 4} - {done}
    assert not all(s["skipped"] for s in swept["after_rerun"][killed]["stages"].values())


def test_the_sweep_report_holds_every_job_once(swept):
    report = swept["sweep"] / "report"
    table = pd.read_csv(report / CSV)
    assert sorted(table["fingerprints"]) == [2, 4]
    assert set(table["strategy"]) == {"random_word"} and set(table["model"]) == {"tiny"}
    for fingerprints, summary in swept["after_submitit"].items():
        row = table[table.fingerprints == fingerprints].iloc[0]
        assert row["success_rate"] == summary["headline"]["success_rate"]
    assert "## Trade-off" in (report / MARKDOWN).read_text()
    assert (report / TRADEOFF_PNG).read_bytes()[:4] == b"\x89PNG"
    assert list((report / "wandb").glob("offline-run-*")), "the trade-off went to (offline) W&B"


def test_submitit_local_launcher_runs_the_jobs_and_the_report(swept):
    assert (swept["sweep"] / ".submitit").is_dir()
    assert set(swept["after_submitit"]) == {2, 4}
    assert all(s["skipped"] for summary in swept["after_submitit"].values() for s in summary["stages"].values())


def test_the_runs_and_the_report_of_a_sweep_form_one_wandb_group(swept):
    # logger.group is null: the group is the sweep's name, and each job is named by its setting.
    runs = list(swept["sweep"].glob("*/wandb/offline-run-*/*.wandb"))
    assert {p.parts[-4] for p in runs} == {"0", "1", "report"}
    for path in runs:
        (run,) = [r.run for r in records(path) if r.WhichOneof("record_type") == "run"]
        assert run.run_group == SWEEP_NAME, f"{path} is not in the sweep's group"
        assert run.display_name in {"random_word-2-none-s0", "random_word-4-none-s0", f"report {SWEEP_NAME}"}


def test_a_rerun_job_resumes_its_wandb_run(swept):
    # The sweep ran three times; each job folder (and the report) logged offline each time, always under one run id.
    for folder in [swept["sweep"] / "0", swept["sweep"] / "1", swept["sweep"] / "report"]:
        logged = list((folder / "wandb").glob("offline-run-*"))
        assert len(logged) >= 2 or folder.name == "report", f"{folder} was logged by only {len(logged)} of the runs"
        ids = {p.name.rsplit("-", 1)[1] for p in logged}
        assert len(ids) == 1, f"{folder} logged {len(ids)} different W&B runs"
    assert len({p.name.rsplit("-", 1)[1] for p in swept["sweep"].glob("*/wandb/offline-run-*")}) == 3


def test_no_key_in_wandb_files_or_logs(swept):
    secrets = set()
    for path in (swept["out"] / "stages" / "generate").glob("*/fingerprints.json"):
        for row in json.loads(path.read_text()):
            secrets.update({row["key"], row["effective_key"]})
    assert secrets
    files = [p for p in swept["sweep"].rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.suffix == ".log" for p in files)
    for path in files:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secrets), f"{path} holds a fingerprint key"
    for log in swept["logs"]:
        assert not any(s in log for s in secrets), "a key was printed"


def test_the_capacity_sweep_runs_six_jobs_each_count_with_its_eval_items(tmp_path):
    """`-cn capacity_cpu` lists its jobs (Hydra's --info would not): 3 counts x 2 regularizers, and each count's
    fingerprints.num and eval.limit come from its file in sweeps/capacity_count/, not from an inherited axis."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    conf = f"hydra.searchpath=[file://{ROOT / 'conf'}]"  # what the CLI's own config path adds
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        params = OmegaConf.to_container(compose("capacity_cpu", overrides=[conf], return_hydra_config=True)
                                        .hydra.sweeper.params)
        assert {k: str(v).split(",") for k, v in params.items() if k != "model"} == {
            "strategy": ["perinucleus"], "regularizer": ["none", "averaging"],
            "capacity_count": ["n1024", "n256", "n64"], "seed": ["0"]}
        for count, limit in (("n1024", None), ("n256", 200), ("n64", 200)):
            cfg = compose("capacity_cpu", overrides=[conf, f"capacity_count={count}", f"paths.output_dir={tmp_path}"])
            assert (cfg.fingerprints.num, cfg.eval.limit) == (int(count[1:]), limit)
            assert cfg.fingerprints.pool_size == 1024 and list(cfg.check.chat) == [True]


@pytest.mark.parametrize("name, strengths, kinds", [
    ("persistence_cpu", 2, ("SFT", "Mergelinear", "Quantize", "Prune", "Distill")),
    ("persistence", 3, ("SFT", "Mergelinear", "Mergeties", "Prune", "Distill"))])
def test_the_persistence_sweeps_type_every_attack_at_several_strengths(name, strengths, kinds):
    """Every attack entry of the persistence sweeps is a typed component; each kind comes at several strengths (two
    bit widths for quantization), and the jobs are regularizer none and averaging (and more) at one seed."""
    from collections import Counter

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from oml_exp import components
    from oml_exp.attacks import stage

    conf = f"hydra.searchpath=[file://{ROOT / 'conf'}]"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        cfg = compose(name, overrides=[conf], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert {"none", "averaging"} <= set(params["regularizer"].split(",")) and str(params["seed"]) == "0"
    attacks = stage.picked(components.expanded(cfg).attack)
    found = Counter(f"{type(a).__name__}{getattr(a, 'method', '')}{'lora' if getattr(a, 'lora', False) else ''}"
                    for a in attacks)
    assert found["Quantize"] == 2
    assert all(found[k] >= strengths for k in kinds), found
    assert len({a.name for a in attacks}) == len(attacks)
