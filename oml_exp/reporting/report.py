"""The report stage: the run folder's summary.json and summary.md, the short printed summary, and the summary handed
to the configured logger; also the run's experiment id.

It runs on every run, also when every other stage was skipped, and reads only the stage summaries (which never
hold keys), so nothing it writes, prints or logs can leak a fingerprint.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from oml_exp.config import fingerprint_num
from oml_exp.reporting.intervals import wilson
from oml_exp.store import write_json, write_text
from oml_exp import distributed

log = logging.getLogger(__name__)


def run(cfg: DictConfig, results: dict, run_dir: Path, write: bool = True) -> dict:
    """Summarize the run; `write` its summary.json and summary.md to `run_dir` (the pipeline's report stage)."""
    strategy = cfg.strategy.name if not cfg.fingerprints.file else "file"
    count = fingerprint_count(cfg, results)
    regularizer = label(OmegaConf.to_container(cfg.regularizer))
    summary = {
        "name": f"{strategy}-{count}-{regularizer}-s{cfg.seed}",  # what tells the run apart in a sweep
        "model": cfg.model.path,
        "strategy": strategy,
        "fingerprints": count,
        "headline": headline(results),
        "stages": {name: {"folder": str(r.folder), "hash": r.folder.name, "skipped": r.skipped,
                          "seconds": round(r.seconds, 2), "summary": r.summary} for name, r in results.items()},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if not distributed.is_main():
        return summary  # under a launcher, rank 0 alone speaks for the run
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "summary.json", summary)
        write_text(run_dir / "summary.md", markdown(summary))
        log.info("run summary written to %s", run_dir / "summary.md")
    instantiate(cfg.logger).log_run(summary, run_dir, experiment(summary))
    log.info("%s", text(summary))
    return summary


def fingerprint_count(cfg: DictConfig, results: dict):
    """The fingerprints the run used: fingerprints.num, or (null with a file) every row the generate stage read."""
    num = fingerprint_num(cfg.fingerprints)
    gen = results.get("generate")
    return num if num is not None or gen is None else gen.summary.get("count")


def label(section: dict) -> str:
    """A config group's choice by name; a list of choices (each in its own package) joined by + ("averaging+lora")."""
    if "name" in section:
        return str(section["name"])
    return "+".join(label(part) for part in section.values() if isinstance(part, dict)) or "none"


def experiment(summary: dict) -> str:
    """What makes two runs the same experiment: the stage outputs they used ("check:<hash>,evaluate:<hash>,...")."""
    return ",".join(f"{name}:{stage['hash']}" for name, stage in sorted(summary["stages"].items()))


def headline(results: dict) -> dict:
    """The few numbers a user looks for first: recall, utility before and after, drift."""
    check = results.get("check")
    out = measured(check, results.get("evaluate") or results.get("evaluate_base"), ("tasks", "drift", "mean", "notes"))
    if check is not None:
        out["token_accuracy"] = check.summary.get("token_accuracy")
        base_fp = false_positive_rate(check.summary)
        if base_fp is not None:
            out["false_positive_rate"] = base_fp
    finetune = results.get("finetune")
    if finetune is not None:
        out["train_steps"] = finetune.summary.get("steps")
    attacks = {name.removeprefix("attack/"): attack_headline(name.removeprefix("attack/"), results)
               for name in results if name.startswith("attack/") and not name.endswith("/partner")}
    if attacks:
        out["attacks"] = attacks
    verify = results.get("verify")
    if verify is not None:
        out["verify"] = {k: verify.summary[k] for k in ("endpoint", "model", "matched", "sent", "p_value")}
    return out


def attack_headline(name: str, results: dict) -> dict:
    """What an attack did (its strength, how far the weights and, for training, the loss moved) and what survived it:
    the attacked model's fingerprint success and, when evaluated, its utility."""
    attack = results[f"attack/{name}"].summary
    out = {k: attack[k] for k in ("kind", "strength", "weight_change", "first_loss", "final_loss", "tokens")
           if k in attack}
    return {**out, **measured(results.get(f"check/{name}"), results.get(f"evaluate/{name}"), ("mean", "drift"))}


def measured(check, evaluation, keys: tuple) -> dict:
    """What a model's check and evaluate stages found: success (with intervals) and success per framing, and the
    evaluate summary's `keys`; the fingerprinted model and every attacked one are summarized alike."""
    out = {}
    if check is not None:
        out.update(success(check.summary))
        out["framings"] = framings(check.summary)
    if evaluation is not None:
        out.update({k: evaluation.summary[k] for k in keys if k in evaluation.summary})
    return out


def success(check: dict) -> dict:
    """A check's success rate and held-out success (when measured), each with its Wilson 95% interval over the
    fingerprints checked (`_ci`: [low, high])."""
    out = {}
    for name, rate in [("success_rate", check.get("success_rate")), ("heldout_success_rate", heldout_success(check))]:
        if rate is not None:
            out[name] = rate
            out[name.replace("_rate", "_ci")] = list(wilson(rate, check.get("fingerprints") or 0))
    return out


def framings(check: dict) -> dict[str, float]:
    """Mean success per framing of a check stage's summary: chat mode / template set ("raw/plain", "chat/heldout")."""
    return {name: s["mean"] for name, s in (check.get("sets") or {}).items()}


def heldout_success(check: dict) -> Optional[float]:
    """Mean success over the held-out templates, in the chat mode the fingerprints were trained in."""
    return framings(check).get(f"{'chat' if check.get('chat_template') else 'raw'}/heldout")


def false_positive_rate(check: dict) -> Optional[float]:
    return ((check.get("false_positives") or {}).get("base") or {}).get("success_rate")


def _rows(summary: dict) -> list[tuple[str, str]]:
    h = summary["headline"]
    rows = [("model", summary["model"]), ("fingerprints", f"{summary['fingerprints']} ({summary['strategy']})")]
    if h.get("success_rate") is not None:
        rows.append(("fingerprint success", f"{h['success_rate']:.1%} exact, {h.get('token_accuracy') or 0:.1%} per token"))
    if h.get("heldout_success_rate") is not None:
        rows.append(("  under held-out prompts", f"{h['heldout_success_rate']:.1%} (mean over templates)"))
    if len(h.get("framings") or {}) > 1:
        rows.append(("  by framing", ", ".join(f"{name} {rate:.1%}" for name, rate in h["framings"].items())))
    if h.get("false_positive_rate") is not None:
        rows.append(("  false positives (base)", f"{h['false_positive_rate']:.1%} greedy hits on the base model"))
    for task, t in (h.get("tasks") or {}).items():
        value = f"base {_pct(t.get('base', t.get('score')))}"
        if t.get("fingerprinted") is not None:
            value += f" -> fingerprinted {_pct(t['fingerprinted'])} (n={t.get('n')})"
        if t.get("retention") is not None and t["retention"] == t["retention"]:
            value += f", retention {t['retention']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}]"
        rows.append((f"utility {task} {t.get('metric', '')}".strip(), value))
    if h.get("drift"):
        d = h["drift"]
        rows.append(("drift vs base", f"top-1 agreement {d.get('top1_agreement', float('nan')):.3f}, "
                                      f"KL {d.get('kl', float('nan')):.4f} nats/token"))
    if (h.get("mean") or {}).get("retention") is not None:
        lo, hi = h["mean"].get("retention_ci") or (math.nan, math.nan)
        rows.append(("mean retention", f"{h['mean']['retention']:.3f} [{lo:.3f}, {hi:.3f}] over {len(h['tasks'])} "
                                       "tasks (paired bootstrap)"))
    for name, a in (h.get("attacks") or {}).items():
        rows.append((f"attack {name}", _attack_text(a)))
    if h.get("verify"):
        v = h["verify"]
        rows.append(("ownership (verify)", f"{v['matched']}/{v['sent']} fingerprints matched at {v['endpoint']} "
                                           f"({v['model']}), p = {v['p_value']:.3g}"))
    for note in h.get("notes") or []:
        rows.append(("note", note))
    rows.append(("stages", ", ".join(f"{n}{' (cached)' if s['skipped'] else ''}"
                                     for n, s in summary["stages"].items())))
    return rows


def _attack_text(a: dict) -> str:
    s = a["strength"]
    extra = "".join(f", {k} {v}" for k, v in s.items() if k not in ("measure", "value"))
    parts = [f"{a['kind']} ({s['measure']} {s['value']}{extra})"]
    if a.get("success_rate") is not None:
        parts.append(f"success {a['success_rate']:.1%}")
    if a.get("heldout_success_rate") is not None:
        parts.append(f"held-out {a['heldout_success_rate']:.1%}")
    if (a.get("weight_change") or {}).get("relative_l2") is not None:
        parts.append(f"weights moved {a['weight_change']['relative_l2']:.2%}")
    if a.get("final_loss") is not None:
        parts.append(f"loss {a['first_loss']:.3f} -> {a['final_loss']:.3f}")
    if (a.get("mean") or {}).get("retention") is not None:
        parts.append(f"mean retention {a['mean']['retention']:.3f}")
    if (a.get("drift") or {}).get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {a['drift']['top1_agreement']:.3f}")
    return ", ".join(parts)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def text(summary: dict) -> str:
    rows = _rows(summary)
    width = max(len(k) for k, _ in rows)
    return "\n".join(["== oml-exp summary =="] + [f"{k.ljust(width)}  {v}" for k, v in rows])


def markdown(summary: dict) -> str:
    lines = ["# oml-exp run summary", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _rows(summary)]
    lines += ["", "Stage outputs (content-addressed store):", ""]
    lines += [f"- {n}: `{s['folder']}`{' (reused)' if s['skipped'] else ''}" for n, s in summary["stages"].items()]
    return "\n".join(lines) + "\n"
