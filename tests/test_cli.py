"""What a user sees of `oml-exp`: its help page, tab completion without torch, and stage lines in the job log."""

import json
import subprocess
import sys

from .conftest import ROOT, subprocess_env

# The CLI's help or a completion query, then the heavy libraries it loaded on the way, as one line of JSON (at exit:
# Hydra ends --help with sys.exit).
LOADED = """
import atexit, json, sys
heavy = ("torch", "transformers", "lm_eval", "deepspeed", "datasets")
atexit.register(lambda: print(json.dumps(sorted(m for m in heavy if m in sys.modules))))
from oml_exp.__main__ import main
sys.argv = ["oml-exp", *sys.argv[1:]]
main()
"""


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**subprocess_env(), **(env or {})})


def test_help_names_the_program_and_lists_every_group_with_its_options():
    done = cli("-m", "oml_exp", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    page = done.stdout
    assert page.startswith("oml-exp: ") and "__main__" not in page and "powered by Hydra" not in page
    for group in ("augmentation", "engine", "eval", "experiment", "logger", "model", "regularizer", "strategy"):
        assert f"\n{group}:\n" in page
    assert "  * perinucleus" in page, "the default option is starred"
    # an option's line is the first sentence of its YAML file's comment
    assert "    random_word               Keys and responses of random whole words from the tokenizer's" in page
    assert "oml-exp -m -cd sweeps -cn persistence_cpu" in page and "oml-exp regularizer=averaging" in page
    assert "hydra/" not in page, "Hydra's own groups stay on --hydra-help"


def test_help_stars_the_chosen_options_and_adds_a_sweep_files_groups():
    page = cli("-m", "oml_exp", "-cd", "sweeps", "-cn", "capacity_cpu", "model=tiny", "--help").stdout
    assert "  * tiny " in page and "  * smollm2_135m" not in page
    assert "\ncapacity_count:\n" in page and "  * n1024" in page


def test_help_and_tab_completion_load_no_torch():
    for args, env in [(["--help"], None), (["-sc", "query=bash"], {"COMP_LINE": "oml-exp mod"})]:
        done = cli("-c", LOADED, *args, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == [], f"{args} loaded heavy libraries"
    assert "model=" in done.stdout.splitlines()[0], "completion still answers"


def test_the_job_log_holds_the_stage_lines_and_no_library_noise(tmp_path):
    done = cli("-m", "oml_exp", "model=tiny", "device=cpu", "stages=[generate,check]", "fingerprints.num=2",
               "fingerprints.key_length=8", "check.max_templates=1", f"paths.output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    (log,) = tmp_path.glob("runs/*/*/oml-exp.log")
    text = log.read_text()
    assert "[generate] running -> " in text and "[check] running -> " in text
    assert "[check] 2 fingerprints, trained without the chat template" in text and "held-out templates" in text
    assert "Loading weights" not in done.stdout + done.stderr, "transformers' bars are off at verbose=0"
    keys = [row["key"] for path in tmp_path.glob("stages/generate/*/fingerprints.json")
            for row in json.loads(path.read_text())]
    assert keys and not any(k in text or k in done.stdout for k in keys)
