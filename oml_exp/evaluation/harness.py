"""Run lm-eval in process on a loaded model and keep every item's score, so two models can be compared item by item;
lm-eval's own output files are kept too."""

from __future__ import annotations

from pathlib import Path

from oml_exp.evaluation import tasks
from oml_exp.store import file_digest

LM_EVAL = "lm_eval"  # the folder of lm-eval's files, laid out as `lm_eval --output_path` lays them out
RESULTS = "results.json"


def score(model, tokenizer, plan: tasks.Plan, eval_cfg, out: Path) -> dict:
    """Per task: the metric, the per-item scores in item order, the items' hashes and lm-eval's aggregate. lm-eval's
    results file (every metric with its stderr, the task configs, versions, sample counts) goes to out/lm_eval/, with
    its per-item logs when eval.log_samples is set."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks.check(plan, eval_cfg.num_fewshot)
    built = tasks.build(plan, eval_cfg.num_fewshot)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=eval_cfg.batch_size)
    tracker = EvaluationTracker(output_path=str(out / LM_EVAL / RESULTS))
    # The tasks are built: an empty manager only passes them through (a default one would index all of lm-eval's).
    # No verbosity: lm-eval would add a console handler of its own; its level is the run's (oml_exp/verbosity.py).
    results = simple_evaluate(model=lm, tasks=list(built.values()), limit=eval_cfg.limit,
                              bootstrap_iters=eval_cfg.bootstrap, log_samples=True, evaluation_tracker=tracker,
                              task_manager=TaskManager(include_defaults=False))
    scores = {spec.name: _task_scores(results, tasks.task_name(plan, spec), spec, plan) for spec in plan.specs}
    save(tracker, results, eval_cfg.log_samples)
    return scores


def save(tracker, results: dict, log_samples: bool) -> None:
    """lm-eval's files, written by its own tracker (which also sanitizes the per-item logs), under fixed names."""
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)  # the samples give the per-task item hashes
    if log_samples:
        for task in results["configs"]:
            tracker.save_results_samples(task_name=task, samples=samples[task])
    # lm-eval stamps every name with the time; a store entry is written once, so its names can be fixed ones.
    stamp = f"_{getattr(tracker, 'date_id', None)}"  # set as the results file is written
    folder = Path(tracker.output_path).parent
    if not (folder / RESULTS.replace(".json", f"{stamp}.json")).is_file():  # the tracker logs a failure, not raises
        raise RuntimeError(f"lm-eval could not write its results into {folder} (its warning above says why)")
    for path in folder.iterdir():
        path.rename(path.with_name(path.name.replace(stamp, "")))


def _task_scores(results: dict, task: str, spec: tasks.TaskSpec, plan: tasks.Plan) -> dict:
    samples = sorted((s for s in results["samples"][task] if s["filter"] == spec.filter), key=lambda s: s["doc_id"])
    return {"metric": spec.metric, "filter": spec.filter, "n": len(samples),
            "aggregate": float(results["results"][task][f"{spec.metric},{spec.filter}"]),
            "aggregation": "irt" if plan.irt else "mean",
            "scores": [float(s[spec.metric]) for s in samples],
            "doc_hashes": [s["doc_hash"] for s in samples]}


def data_digest(plan: tasks.Plan, eval_cfg) -> dict:
    """What the scores depend on beyond the config and lm-eval: the content of every local file the tasks read."""
    digests = {str(path): file_digest(path) if path.is_file() else None
               for spec in plan.specs for path in tasks.sources(plan, spec, eval_cfg.num_fewshot)}
    return {"pack": str(plan.pack) if plan.pack else None, "files": digests} if digests else {}
