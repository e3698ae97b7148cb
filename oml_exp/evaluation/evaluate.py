"""The evaluate stage: utility with lm-eval, paired against the base model, and data-free drift.

The pipeline runs it twice. For the base model (no `inputs.base_eval`) it stores the per-item scores and the benign
texts the base writes for drift, once per model and eval config. For the fingerprinted model it scores the same
items and reports, per task, base and fingerprinted score, retention with a paired bootstrap interval and McNemar's
p, plus drift against the base on the base's own texts.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from oml_exp import models, tables
from oml_exp.evaluation import drift, harness, stats, tasks
from oml_exp.store import file_digest, read_json, write_json

log = logging.getLogger(__name__)

SCORES = "scores.json"
DRIFT_TEXTS = "drift_texts.json"


def key(cfg: DictConfig) -> dict:
    drift_file = cfg.eval.drift_file
    return {"eval": OmegaConf.to_container(cfg.eval, resolve=True),
            "drift_file": file_digest(drift_file) if drift_file else None,  # its texts, not its name, are measured
            **harness.data_digest(tasks.plan(cfg.eval), cfg.eval)}


def run(cfg: DictConfig, inputs, out: Path) -> dict:
    plan = tasks.plan(cfg.eval)
    model, tokenizer = models.load(inputs.model, cfg.device, cfg.model.dtype)
    scores = harness.score(model, tokenizer, plan, cfg.eval, out) if plan.specs else {}
    write_json(out / SCORES, scores)
    summary = {"suite": plan.suite, "pack": str(plan.pack) if plan.pack else None, "limit": cfg.eval.limit,
               "notes": plan.notes + irt_notes(scores)}
    if inputs.base_eval is None:
        rows = drift.texts(model, tokenizer, cfg.eval.drift_texts, cfg.eval.drift_tokens, cfg.eval.drift_file)
        write_json(out / DRIFT_TEXTS, rows)
        summary["tasks"] = {name: task_summary(s) for name, s in scores.items()}
        summary["drift_texts"] = len(rows)
    else:
        base_scores = read_json(Path(inputs.base_eval) / SCORES)
        summary["tasks"] = {name: compare(base_scores[name], s, cfg) for name, s in scores.items()}
        summary["drift"] = measure_drift(cfg, inputs, model, tokenizer)
    summary["mean"] = mean_scores(summary["tasks"])
    if summary["mean"].get("retention") is not None:
        both = stats.mean_retention([(base_scores[name]["scores"], s["scores"]) for name, s in scores.items()],
                                    cfg.eval.bootstrap, cfg.seed)
        summary["mean"]["retention_ci"] = [both["ci_low"], both["ci_high"]]
    log.info("%s", table(summary))
    return summary


def task_summary(s: dict) -> dict:
    return {"metric": s["metric"], "n": s["n"], "score": s["aggregate"], "aggregation": s["aggregation"]}


def compare(base: dict, tuned: dict, cfg: DictConfig) -> dict:
    if base["doc_hashes"] != tuned["doc_hashes"]:
        raise tasks.EvalError(f"task {tuned['metric']}: the base evaluation scored other items; rerun with force=true")
    return {"metric": tuned["metric"], "n": tuned["n"], "aggregation": tuned["aggregation"],
            "base_aggregate": base["aggregate"], "fingerprinted_aggregate": tuned["aggregate"],
            **stats.retention(base["scores"], tuned["scores"], cfg.eval.bootstrap, cfg.seed),
            **stats.mcnemar(base["scores"], tuned["scores"])}


def measure_drift(cfg: DictConfig, inputs, model, tokenizer) -> dict:
    rows = read_json(Path(inputs.base_eval) / DRIFT_TEXTS)
    base, _ = models.load(inputs.base_model, cfg.device, cfg.model.dtype)
    result = drift.measure(base, model, rows, tokenizer.pad_token_id)
    del base
    gc.collect()
    return result


def mean_scores(task_summaries: dict) -> dict:
    """Unweighted means over tasks (the reference system's tinyBenchmarks headline is such a mean)."""
    if not task_summaries:
        return {}
    keys = ("base", "fingerprinted", "retention") if "retention" in next(iter(task_summaries.values())) else ("score",)
    return {k: sum(t[k] for t in task_summaries.values()) / len(task_summaries) for k in keys}


def irt_notes(scores: dict) -> list[str]:
    tiny = [name for name, s in scores.items() if name.startswith("tiny") and s["aggregation"] == "mean"]
    if not tiny:
        return []
    return [f"{', '.join(tiny)}: plain mean, not the IRT estimate (that needs the 100 curated Hub items, no "
            "eval.limit, and pip install git+https://github.com/felipemaiapolo/tinyBenchmarks)"]


def table(summary: dict) -> str:
    paired = "drift" in summary
    header = (["task", "metric", "n", "base", "fingerprinted", "retention", "95% CI", "McNemar p"] if paired
              else ["task", "metric", "n", "score"])
    rows = []
    for name, t in summary["tasks"].items():
        if paired:
            rows.append([name, t["metric"], t["n"], t["base"], t["fingerprinted"], t["retention"],
                         f"[{t['ci_low']:.3f}, {t['ci_high']:.3f}]", t["mcnemar_p"]])
        else:
            rows.append([name, t["metric"], t["n"], t["score"]])
    lines = [tables.render(f"[evaluate] {summary['suite']} ({'fingerprinted vs base' if paired else 'base'})",
                           header, rows)]
    if paired:
        d = summary["drift"]
        lines.append(f"  drift: KL {d['kl']:.4f} nats/token, top-1 agreement {d['top1_agreement']:.3f} "
                     f"over {d['tokens']} tokens of {d['texts']} base-written texts")
    lines += [f"  note: {n}" for n in summary["notes"]]
    return "\n".join(lines)
