"""The evaluate stage on the tiny model: base then fingerprinted, paired on the same items, drift on base texts."""

from __future__ import annotations

import functools
import json
import random
import time
from pathlib import Path

import pytest

from oml_exp.config import ConfigError, validate
from oml_exp.evaluation import drift, evaluate, harness, stats, tasks
from oml_exp.pipeline import Inputs
from oml_exp.store import read_json
from tests.check_helpers import perturbed_copy
from tests.conftest import BENCHMARKS, PACK, local_task

TINY = "tiny:llama"
FIXTURES = PACK.parent


@pytest.fixture
def eval_cfg(tiny_cfg):
    return functools.partial(tiny_cfg, "eval.drift_texts=3", "eval.drift_tokens=6", "eval.bootstrap=200")


def run_stage(cfg, inputs, folder: Path) -> dict:
    folder.mkdir(parents=True)
    return evaluate.run(cfg, inputs, folder)


# The fixture pack runs everywhere; the real one (CI) also checks its files against the schemas.
@pytest.mark.parametrize("pack", [PACK, pytest.param(BENCHMARKS, marks=pytest.mark.benchmarks)],
                         ids=["fixture_pack", "shared_pack"])
def test_base_then_fingerprinted_are_paired_on_the_same_items(tiny, tmp_path, eval_cfg, pack):
    model, tok = tiny
    other = perturbed_copy(model, tok, tmp_path / "other", scale=0.3)
    cfg = eval_cfg(f"eval.pack={pack}", "eval.limit=4", "eval.tasks=[arc_easy,piqa]")

    base = run_stage(cfg, Inputs(model=TINY, base_model=TINY), tmp_path / "base")
    assert set(base["tasks"]) == {"arc_easy", "piqa"} and base["tasks"]["piqa"]["n"] == 4
    stored = read_json(tmp_path / "base" / evaluate.SCORES)
    assert len(stored["arc_easy"]["scores"]) == 4 and set(stored["arc_easy"]["scores"]) <= {0.0, 1.0}
    assert len(read_json(tmp_path / "base" / evaluate.DRIFT_TEXTS)) == 3
    lm_eval = read_json(tmp_path / "base" / harness.LM_EVAL / harness.RESULTS)  # as `lm_eval --output_path` writes
    for task in ("oml_local_arc_easy", "oml_local_piqa"):
        assert {"acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none"} <= set(lm_eval["results"][task])
        assert lm_eval["results"][task]["acc_stderr,none"] > 0 and lm_eval["n-samples"][task]["effective"] == 4
        assert task in lm_eval["configs"] and task in lm_eval["versions"] and task in lm_eval["task_hashes"]
    assert lm_eval["results"]["oml_local_piqa"]["acc_norm,none"] == pytest.approx(stored["piqa"]["aggregate"])

    assert not list((tmp_path / "base" / harness.LM_EVAL).glob("samples_*"))  # per-item logs only when asked

    logged = eval_cfg(f"eval.pack={pack}", "eval.limit=4", "eval.tasks=[arc_easy,piqa]", "eval.log_samples=true")
    tuned = run_stage(logged, Inputs(model=other, base_model=TINY, base_eval=tmp_path / "base"), tmp_path / "tuned")
    samples = (tmp_path / "tuned" / harness.LM_EVAL / "samples_oml_local_piqa.jsonl").read_text().splitlines()
    assert len(samples) == 4 and json.loads(samples[0])["doc_id"] == 0
    piqa = tuned["tasks"]["piqa"]
    assert piqa["base"] == pytest.approx(base["tasks"]["piqa"]["score"])
    assert piqa["ci_low"] <= piqa["retention"] <= piqa["ci_high"] or piqa["base"] == 0
    assert 0 <= piqa["mcnemar_p"] <= 1
    lo, hi = tuned["mean"]["retention_ci"]  # the mean over tasks, with its own paired interval
    arc = tuned["tasks"]["arc_easy"]
    assert tuned["mean"]["retention"] == pytest.approx((piqa["retention"] + arc["retention"]) / 2)
    assert lo <= hi
    assert not (tmp_path / "tuned" / evaluate.DRIFT_TEXTS).exists()  # the base's texts are written once, there
    d = tuned["drift"]
    assert d["tokens"] == sum(len(r["ids"]) - r["start"] for r in read_json(tmp_path / "base" / evaluate.DRIFT_TEXTS))
    assert d["kl"] > 1e-4 and 0 <= d["top1_agreement"] <= 1


def test_no_pack_reports_drift_only_with_a_note(tiny, tmp_path, eval_cfg):
    cfg = eval_cfg("eval.pack=null")
    base = run_stage(cfg, Inputs(model=TINY, base_model=TINY), tmp_path / "base")
    assert base["tasks"] == {} and "drift only" in base["notes"][0]
    tuned = run_stage(cfg, Inputs(model=TINY, base_model=TINY, base_eval=tmp_path / "base"), tmp_path / "tuned")
    assert tuned["drift"]["kl"] == pytest.approx(0, abs=1e-6) and tuned["drift"]["top1_agreement"] == 1.0


def test_auto_pack_prefers_the_environment_variable_then_looks_beside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("OML_BENCHMARKS", str(PACK))
    assert tasks.find_pack("auto")[0] == PACK.resolve()
    # A checkout at tmp/repo, run from there, whatever lies beside the real one.
    monkeypatch.setenv("OML_BENCHMARKS", str(tmp_path / "nowhere"))
    monkeypatch.setattr(tasks, "REPO", tmp_path / "repo")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    found, looked = tasks.find_pack("auto")
    assert found is None and str(tmp_path / "nowhere") in looked
    (tmp_path / "shared" / "benchmarks").mkdir(parents=True)
    assert tasks.find_pack("auto")[0] == (tmp_path / "shared" / "benchmarks").resolve()


def test_user_drift_file_is_measured_as_written(tiny, tmp_path, eval_cfg):
    texts = tmp_path / "texts.txt"
    texts.write_text("The river ran past the mill.\nA cat slept on the warm stones.\n")
    cfg = eval_cfg("eval.pack=null", f"eval.drift_file={texts}")
    run_stage(cfg, Inputs(model=TINY, base_model=TINY), tmp_path / "base")
    rows = read_json(tmp_path / "base" / evaluate.DRIFT_TEXTS)
    assert [r["start"] for r in rows] == [1, 1] and len(rows) == 2


@pytest.mark.parametrize("pack, task, where", [
    ("bad_packs/malformed", "piqa", "piqa/test.jsonl:2: not valid JSON"),
    ("bad_packs/wrong_schema", "arc_easy",
     "arc_easy/test.jsonl:2: not the arc_easy schema: missing or mistyped answerKey"),
    ("bad_packs/wrong_schema", "piqa", "piqa/test.jsonl: missing"),
])
def test_bad_pack_input_names_file_and_line(tiny, tmp_path, eval_cfg, pack, task, where):
    cfg = eval_cfg(f"eval.pack={FIXTURES / pack}", f"eval.tasks=[{task}]")
    with pytest.raises(tasks.EvalError, match=where.replace(".", r"\.")):
        run_stage(cfg, Inputs(model=TINY, base_model=TINY), tmp_path / "base")


@pytest.mark.parametrize("suite", ["tinybenchmarks", "openllm"])
def test_hub_suites_fail_at_once_offline_naming_the_local_alternative(tiny, tmp_path, eval_cfg, suite):
    cfg = eval_cfg(f"eval={suite}")
    start = time.time()
    with pytest.raises(tasks.EvalError, match="eval=local"):
        run_stage(cfg, Inputs(model=TINY, base_model=TINY), tmp_path / "base")
    assert time.time() - start < 15


@pytest.fixture
def short_generations(monkeypatch):
    """GSM8K answers of 4 tokens: the random tiny model would otherwise write the full 256 for every item."""
    build = tasks.build

    def short(*args):
        built = build(*args)
        for task in built.values():
            if task.get_config("output_type") == "generate_until":
                task.set_config(key="generation_kwargs", value={"max_gen_toks": 4}, update=True)
        return built
    monkeypatch.setattr(tasks, "build", short)


@pytest.mark.parametrize("suite, shots", [("tinybenchmarks", 1), ("openllm", 2)])
def test_hub_suites_build_and_score_on_local_files_of_the_same_schemas(tiny, tmp_path, eval_cfg, short_generations,
                                                                       suite, shots):
    cfg = eval_cfg(f"eval={suite}", f"eval.pack={PACK}", "eval.limit=2", f"eval.num_fewshot={shots}")
    summary = run_stage(cfg, Inputs(model=TINY, base_model=TINY), tmp_path / "base")
    assert set(summary["tasks"]) == set(cfg.eval.tasks)
    assert all(t["n"] == 2 and 0 <= t["score"] <= 1 for t in summary["tasks"].values())
    scores = read_json(tmp_path / "base" / evaluate.SCORES)
    assert all(s["aggregate"] == pytest.approx(sum(s["scores"]) / 2) for s in scores.values())
    if suite == "tinybenchmarks":  # local files are not the curated items the IRT model was fitted on
        assert any("plain mean" in n for n in summary["notes"])


def test_pack_tasks_are_built_by_lm_evals_task_manager_from_upstream_files():
    plan = tasks.Plan("openllm", [tasks.OPENLLM["hellaswag"]], PACK, [])
    task = tasks.build(plan, 10)["hellaswag"]
    source = Path(task.config.metadata["config_source"])  # the task file lm-eval's TaskManager indexed and loaded
    assert source.name == "hellaswag.yaml" and source.parent.name.startswith("oml_lm_eval_")
    upstream = tasks.read_upstream(tasks.OPENLLM["hellaswag"])
    assert task.config.doc_to_text == upstream["doc_to_text"] == "{{query}}"  # upstream prompt and helper
    assert callable(task.config.process_docs)
    assert task.config.dataset_path == "json" and task.config.num_fewshot == 10
    assert task.config.dataset_kwargs["data_files"] == {"validation": str(PACK / "hellaswag" / "test.jsonl"),
                                                       "train": str(PACK / "hellaswag" / "fewshot.jsonl")}
    assert len(task.eval_docs) == len((PACK / "hellaswag" / "test.jsonl").read_text().splitlines())
    assert [m["metric"] for m in task.config.metric_list] == ["acc", "acc_norm"]  # all upstream's, as lm-eval runs it
    tiny = tasks.build(tasks.Plan("tinybenchmarks", [tasks.TINYBENCHMARKS["tinyWinogrande"]], PACK, []), 5)
    # No tinyBenchmarks package needed for local files: the plain mean, upstream helpers still in place.
    assert tiny["tinyWinogrande"].config.metric_list[0]["aggregation"] == "mean"
    assert callable(tiny["tinyWinogrande"].config.doc_to_text)


def test_unknown_task_fails_with_one_line_naming_the_known_ones_and_the_fix(make_cfg):
    cfg = make_cfg(f"eval.pack={PACK}", "eval.tasks=[hellaswag,helloswag]")
    with pytest.raises(tasks.EvalError) as err:
        tasks.plan(cfg.eval)
    message = str(err.value)
    assert "\n" not in message and "'helloswag' is not an lm-eval task (nor one of suite local's" in message
    assert "arc_easy" in message and "lm-eval ls tasks" in message and "eval.include_path" in message


def test_a_task_yaml_under_the_include_path_runs_on_its_local_data(tiny, tmp_path, eval_cfg):
    name = local_task(tmp_path, items=3)
    cfg = eval_cfg("eval.pack=null", f"eval.tasks=[{name}]", f"eval.include_path={tmp_path}")
    summary = run_stage(cfg, Inputs(model=TINY, base_model=TINY), tmp_path / "base")
    assert summary["tasks"][name]["n"] == 3 and summary["tasks"][name]["metric"] == "acc" and not summary["notes"]
    results = read_json(tmp_path / "base" / harness.LM_EVAL / harness.RESULTS)["results"][f"oml_local_{name}"]
    assert {"acc,none", "acc_stderr,none"} <= set(results)
    before = evaluate.key(cfg)
    (tmp_path / "yes_no.jsonl").write_text((tmp_path / "yes_no.jsonl").read_text() + '{"question": "?", "label": 0}\n')
    assert evaluate.key(cfg) != before  # its data, like a pack's, is part of what the scores depend on


def test_any_lm_eval_task_is_taken_by_name_and_its_hub_data_checked(make_cfg):
    cfg = make_cfg(f"eval.pack={PACK}", "eval.tasks=[arc_easy,boolq]")
    plan = tasks.plan(cfg.eval)
    arc, boolq = plan.specs
    assert arc == tasks.LOCAL["arc_easy"] and (boolq.name, boolq.metric, boolq.folder) == ("boolq", "acc", None)
    assert tasks.upstream_path(boolq) == tasks.lm_eval_tasks() / "super_glue" / "boolq" / "default.yaml"
    with pytest.raises(tasks.EvalError) as err:  # offline, and the Hub's super_glue is not cached
        tasks.check(plan, None)
    assert "\n" not in str(err.value) and "boolq read aps/super_glue from the Hugging Face Hub" in str(err.value)
    assert "eval.include_path" in str(err.value) and "suite's tasks" not in str(err.value)  # arc_easy is on the pack
    with pytest.raises(tasks.EvalError, match="'mmlu_stem' is an lm-eval group; name its tasks one by one"):
        tasks.plan(make_cfg("eval.tasks=[mmlu_stem]").eval)


def test_the_suite_is_its_target_not_its_name(make_cfg):
    cfg = make_cfg("eval=openllm", "eval.name=local", f"eval.pack={PACK}")
    plan = tasks.plan(cfg.eval)
    assert [s.name for s in plan.specs] == list(tasks.OPENLLM) and plan.specs[0].fewshot == 25
    cfg = make_cfg("eval=local", "eval._target_=oml_exp.evaluation.tasks.tinybenchmarks", "eval.tasks=[tinyArc]",
                   f"eval.pack={PACK}")
    assert tasks.plan(cfg.eval).specs == [tasks.TINYBENCHMARKS["tinyArc"]]


def test_eval_key_follows_pack_content(tmp_path, make_cfg):
    pack = tmp_path / "pack"
    (pack / "piqa").mkdir(parents=True)
    items = (PACK / "piqa" / "test.jsonl").read_text()
    (pack / "piqa" / "test.jsonl").write_text(items)
    cfg = make_cfg(f"eval.pack={pack}", "eval.tasks=[piqa]")
    before = evaluate.key(cfg)
    (pack / "piqa" / "test.jsonl").write_text(items + json.dumps(json.loads(items.splitlines()[0])) + "\n")
    assert evaluate.key(cfg) != before


@pytest.mark.parametrize("override, word", [("eval._target_=oml_exp.evaluation.tasks.helm", "eval._target_"),
                                            ("eval.limit=0", "eval.limit"), ("eval.bootstrap=5", "eval.bootstrap")])
def test_bad_eval_settings_name_the_key(make_cfg, override, word):
    with pytest.raises(ConfigError, match=word):
        validate(make_cfg(override))


def test_drift_prompts_are_disjoint_from_benign_training_text():
    ours = {p.strip().lower() for p in json.loads(drift.PROMPTS.read_text())}
    assert len(ours) >= 16
    data = drift.PROMPTS.parent
    for path in [p for p in data.iterdir() if "benign" in p.name]:
        text = path.read_text().lower()
        assert not [p for p in ours if p in text], f"drift prompts also appear in {path.name}"


def test_mean_retention_bootstraps_every_task_on_the_same_draws():
    rng = random.Random(0)
    base = [float(rng.random() < 0.6) for _ in range(80)]
    tuned = [b if rng.random() < 0.8 else 1 - b for b in base]
    one = stats.retention(base, tuned, 500, seed=3)
    alone = stats.mean_retention([(base, tuned)], 500, seed=3)  # one task: the same resamples, the same interval
    assert (alone["retention"], alone["ci_low"], alone["ci_high"]) == pytest.approx(
        (one["retention"], one["ci_low"], one["ci_high"]))
    both = stats.mean_retention([(base, tuned), (base, base), ([0.0] * 5, [1.0] * 5)], 500, seed=3)
    assert both["retention"] == pytest.approx((one["retention"] + 1.0) / 2)  # a task the base scores 0 on is left out
    assert both["ci_low"] < both["retention"] < both["ci_high"]
    assert both["ci_high"] - both["ci_low"] < one["ci_high"] - one["ci_low"]  # averaging with a fixed task narrows it
