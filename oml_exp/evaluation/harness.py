"""Run lm-eval in process on a loaded model and keep every item's score, so two models can be compared item by item."""

from __future__ import annotations

from pathlib import Path

from oml_exp.evaluation import tasks


def score(model, tokenizer, plan: tasks.Plan, eval_cfg) -> dict:
    """Per task: the metric, the per-item scores in item order, the items' hashes and lm-eval's aggregate."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks.check(plan, eval_cfg.num_fewshot)
    built = tasks.build(plan, eval_cfg.num_fewshot)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=eval_cfg.batch_size)
    # The tasks are built: an empty manager only passes them through (a default one would index all of lm-eval's).
    # No verbosity: lm-eval would add a console handler of its own; its level is the run's (oml_exp/verbosity.py).
    results = simple_evaluate(model=lm, tasks=list(built.values()), limit=eval_cfg.limit, bootstrap_iters=0,
                              log_samples=True, task_manager=TaskManager(include_defaults=False))
    return {spec.name: _task_scores(results, tasks.task_name(plan, spec), spec, plan) for spec in plan.specs}


def _task_scores(results: dict, task: str, spec: tasks.TaskSpec, plan: tasks.Plan) -> dict:
    samples = sorted((s for s in results["samples"][task] if s["filter"] == spec.filter), key=lambda s: s["doc_id"])
    return {"metric": spec.metric, "filter": spec.filter, "n": len(samples),
            "aggregate": float(results["results"][task][f"{spec.metric},{spec.filter}"]),
            "aggregation": "irt" if plan.irt else "mean",
            "scores": [float(s[spec.metric]) for s in samples],
            "doc_hashes": [s["doc_hash"] for s in samples]}


def pack_digest(plan: tasks.Plan, eval_cfg) -> dict:
    """What the scores depend on beyond the config: the content of every pack file the tasks read."""
    from oml_exp.store import file_digest

    if plan.pack is None:
        return {}
    out = {}
    for spec in plan.specs:
        for path in tasks.files(plan, spec, plan.fewshot(spec, eval_cfg.num_fewshot)).values():
            out[str(Path(path).relative_to(plan.pack))] = file_digest(path) if path.is_file() else None
    return {"pack": str(plan.pack), "files": out}
