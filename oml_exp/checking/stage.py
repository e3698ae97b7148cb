"""The check stage: are the fingerprints there, under which prompts, and how often would chance say so?

Writes `results.jsonl` (mode 0600: one row per model, prompt variant and fingerprint, with its key) and returns a
summary without keys: success rate and per-token accuracy per variant, sampled success per temperature, and false
positives on models never fingerprinted with these keys.
"""

from __future__ import annotations

import gc
import logging
import math
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from oml_exp import models, tables
from oml_exp.config import fingerprint_num
from oml_exp.checking import sampling, templates
from oml_exp.checking.scoring import Scored, score
from oml_exp.fingerprints import prompts, schema
from oml_exp.store import file_digest, write_jsonl

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"


def key(cfg: DictConfig) -> dict:
    paths = templates.files(cfg.augmentation.templates)
    used = [paths[s] for s in cfg.check.templates if s in paths]
    return {"check": OmegaConf.to_container(cfg.check, resolve=True), "num": fingerprint_num(cfg.fingerprints),
            "chat_template": cfg.fingerprints.chat_template, "eos": cfg.fingerprints.eos,
            "templates": {p.name: file_digest(p) for p in used if p.exists()},
            # "base" is the pipeline's base_model, already in the key; other specs by their content
            "false_positive_models": [models.identity(s) for s in cfg.check.false_positive_models if s != "base"]}


def run(cfg: DictConfig, inputs, out: Path) -> dict:
    fingerprints = schema.load(inputs.fingerprints, fingerprint_num(cfg.fingerprints))
    model, tokenizer = models.load(inputs.model, cfg.device, cfg.model.dtype)
    variants, notes = templates.variants(list(cfg.check.templates), list(cfg.check.chat),
                                         cfg.fingerprints.chat_template, tokenizer.chat_template is not None,
                                         templates.files(cfg.augmentation.templates), cfg.check.max_templates)
    checker = Checker(cfg, tokenizer, fingerprints, response_ids(fingerprints, tokenizer, cfg.fingerprints.eos))

    greedy = checker.greedy(model, variants, "checked")
    summary = {"model": inputs.model, "fingerprints": len(fingerprints), "chat_template": variants[0].chat,
               **rates(greedy[variants[0]]), "variants": {v.label: rates(s) for v, s in greedy.items()},
               "sets": set_rates(greedy), "notes": notes}
    results = checker.rows("checked", greedy)
    if cfg.check.temperatures:
        summary["sampling"], sampled_rows = checker.sampled(
            model, variants[0], [sampling.Setting(float(t)) for t in cfg.check.temperatures], "checked")
        results += sampled_rows
    del model
    for name, spec in false_positive_models(cfg, inputs, notes):
        summary.setdefault("false_positives", {})[name], fp_rows = checker.false_positives(name, spec, variants[0])
        results += fp_rows
    write_jsonl(out / RESULTS, results, secret=True)
    log.info("%s", table(summary, full=cfg.verbose >= 1))
    return summary


def response_ids(fingerprints: list[dict], tokenizer, eos: bool) -> list[list[int]]:
    """The ids a model must answer with: the response, and EOS after it when training appended it."""
    return [fp["response_ids"] + ([tokenizer.eos_token_id] if eos else []) for fp in fingerprints]


class Checker:
    """Builds the prompts of one fingerprint set once per variant and scores any model on them."""

    def __init__(self, cfg: DictConfig, tokenizer, fingerprints: list[dict], responses: list[list[int]]):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.fingerprints = fingerprints
        self.responses = responses
        self.pad_id = tokenizer.pad_token_id

    def prompt_rows(self, variant: templates.Variant) -> list[tuple[list[int], list[int]]]:
        before, after = prompts.frame(self.tokenizer, variant.chat, variant.template)
        return [(before + fp["key_ids"] + after, r) for fp, r in zip(self.fingerprints, self.responses)]

    def greedy(self, model, variants: list[templates.Variant], role: str) -> dict[templates.Variant, list[Scored]]:
        rows = [row for v in variants for row in self.prompt_rows(v)]
        scored = score(model, rows, self.pad_id, self.cfg.check.batch_size, desc=f"check {role}")
        n = len(self.fingerprints)
        return {v: scored[i * n:(i + 1) * n] for i, v in enumerate(variants)}

    def rows(self, role: str, greedy: dict[templates.Variant, list[Scored]]) -> list[dict]:
        return [{"model": role, "variant": v.label, "set": v.set, "template": v.name, "chat": v.chat, "index": i,
                 "key": fp["key"], "exact": s.exact, "token_hits": s.hits, "ranks": s.ranks,
                 "logprobs": [round(x, 4) for x in s.logprobs]}
                for v, scored in greedy.items() for i, (fp, s) in enumerate(zip(self.fingerprints, scored))]

    def sampled(self, model, variant: templates.Variant, settings: list[sampling.Setting], role: str):
        """Observed against predicted sampled hits per setting; the summary and the per-fingerprint rows."""
        rows = self.prompt_rows(variant)
        samples, batch = self.cfg.check.samples, self.cfg.check.batch_size
        predicted = sampling.hit_probabilities(model, rows, settings, self.pad_id, batch)
        summary, out = {}, []
        for s in settings:
            hits = sampling.sampled_hits(model, rows, s, samples, self.pad_id, batch)
            summary[s.name] = sampling.compare(hits, samples, predicted[s.name])
            out += [{"model": role, "variant": variant.label, "setting": s.name, "index": i, "key": fp["key"],
                     "sampled_hits": h, "samples": samples, "predicted": round(p, 6)}
                    for i, (fp, h, p) in enumerate(zip(self.fingerprints, hits, predicted[s.name]))]
        return summary, out

    def false_positives(self, role: str, spec: str, variant: templates.Variant):
        model, tokenizer = models.load(spec, self.cfg.device, self.cfg.model.dtype)
        if tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise models.ModelError(f"check.false_positive_models: {spec} has a different tokenizer; the "
                                    "fingerprints' token ids mean nothing to it")
        greedy = self.greedy(model, [variant], role)
        summary = {"model": spec, **rank_stats(greedy[variant]), **response_prob_rate(self.fingerprints)}
        rows = self.rows(role, greedy)
        if self.cfg.check.fp_sampling:
            summary["sampled"], sampled_rows = self.sampled(model, variant,
                                                            sampling.settings(list(self.cfg.check.fp_sampling)), role)
            rows += sampled_rows
        del model
        gc.collect()
        return summary, rows


def false_positive_models(cfg: DictConfig, inputs, notes: list[str]) -> list[tuple[str, str]]:
    """(name, model spec) of each model to check for hits it should not have."""
    out = []
    for spec in cfg.check.false_positive_models:
        if spec != "base":
            out.append((models.label(spec), spec))
        elif inputs.base_model != inputs.model:
            out.append(("base", inputs.base_model))
        else:
            notes.append("no base false positives: the checked model is the base model itself")
    return out


def rates(scored: list[Scored]) -> dict:
    tokens = [h for s in scored for h in s.hits]
    return {"success_rate": sum(s.exact for s in scored) / len(scored), "token_accuracy": sum(tokens) / len(tokens),
            "hits": sum(s.exact for s in scored)}


def set_rates(greedy: dict[templates.Variant, list[Scored]]) -> dict:
    """Per chat mode and template set: mean, worst and best success rate over its templates."""
    groups: dict[str, list[float]] = {}
    for v, scored in greedy.items():
        groups.setdefault(f"{'chat' if v.chat else 'raw'}/{v.set}", []).append(rates(scored)["success_rate"])
    return {name: {"templates": len(r), "mean": statistics.fmean(r), "min": min(r), "max": max(r)}
            for name, r in groups.items()}


def rank_stats(scored: list[Scored]) -> dict:
    """Greedy hits, top-10 hits (every response token ranked below 10) and the worst token's rank per fingerprint."""
    worst = [max(s.ranks) for s in scored]
    top10 = sum(r < 10 for r in worst)
    return {**rates(scored), "top10_hits": top10, "top10_rate": top10 / len(worst),
            "median_rank": statistics.median(worst)}


def response_prob_rate(fingerprints: list[dict]) -> dict:
    """The hit rate of plain sampling (temperature 1) that generation's recorded `response_prob` predicts."""
    probs = [fp.get("response_prob") for fp in fingerprints]
    if any(p is None for p in probs):
        return {}
    return {"response_prob_rate": statistics.fmean(math.prod(p) for p in probs)}


SETS = {"plain": "plain key", "train": "train templates", "heldout": "held-out templates"}


def table(summary: dict, full: bool = False) -> str:
    """What the check found, each rate with the counts behind it: the plain key, the template sets and the other
    framing, sampling, and false positives. `full` (verbose >= 1) gives every set of both framings, every sampling
    setting and every false-positive setting a row of its own."""
    n = summary["fingerprints"]
    rows = [["plain key", share(summary["hits"], n), f"per token {summary['token_accuracy']:.1%}"]]
    rows += framing_rows(summary, full)
    rows += sampled_rows(summary.get("sampling", {}), full)
    for name, fp in summary.get("false_positives", {}).items():
        rows += false_positive_rows(name, fp, n, full)
    trained = "through the chat template" if summary["chat_template"] else "without the chat template"
    return tables.render(f"[check] {n} fingerprints, trained {trained}", ["prompts", "success (hits/asked)", "note"],
                         rows)


def share(hits: int, asked: int) -> str:
    return f"{hits / asked:.1%} ({hits}/{asked})"


def set_hits(summary: dict, name: str) -> tuple[int, int]:
    """Hits and prompts over every template of a set ("raw/heldout"): n fingerprints per template."""
    hits = sum(v["hits"] for label, v in summary["variants"].items() if label.startswith(f"{name}/"))
    return hits, summary["sets"][name]["templates"] * summary["fingerprints"]


def framing_rows(summary: dict, full: bool) -> list[list]:
    """The template sets of the trained framing, and the other framing in one row (`full`: a row per set)."""
    trained = "chat" if summary["chat_template"] else "raw"
    rows, other = [], {}
    for name, s in summary["sets"].items():
        framing, kind = name.split("/")
        if name == f"{trained}/plain":
            continue
        if framing == trained or full:
            label = SETS[kind] if framing == trained else name
            spread = "" if kind == "plain" else f"{s['templates']} templates, worst {s['min']:.1%}, best {s['max']:.1%}"
            rows.append([label, share(*set_hits(summary, name)), spread])
        else:
            other[kind] = set_hits(summary, name)
    if other:
        label = "raw, no chat template" if trained == "chat" else "chat template"
        rows.append([label, share(*map(sum, zip(*other.values()))),
                     ", ".join(f"{SETS[kind]} {h}/{a}" for kind, (h, a) in other.items())])
    return rows


def sampled_rows(sampling: dict, full: bool) -> list[list]:
    if full:
        return [[f"sampled {name}", share(s["hits"], s["draws"]), f"predicted {s['predicted_rate']:.1%}"]
                for name, s in sampling.items()]
    if not sampling:
        return []
    hits, draws, predicted = pooled(sampling)
    return [[f"sampled ({', '.join(sampling)})", share(hits, draws), f"{predicted:.1f} hits predicted"]]


def false_positive_rows(name: str, fp: dict, n: int, full: bool) -> list[list]:
    """Greedy hits on a model never fingerprinted with these keys; its sampled hits against the logits' prediction."""
    sampled = fp.get("sampled", {})
    note = f"top-10 {fp['top10_hits']}/{n}"
    if full:
        note += f", median rank {fp['median_rank']:g}"
    elif sampled:
        hits, draws, predicted = pooled(sampled)
        note += (f"; sampled {hits}/{draws} over {len(sampled)} settings, {predicted:.1f} predicted, lowest p "
                 f"{min(r['p_value'] for r in sampled.values()):.2f}")
    rows = [[f"false positives ({name})", share(fp["hits"], n), note]]
    if full:
        rows += [[f"  sampled {s}", share(r["hits"], r["draws"]),
                  f"predicted {r['predicted_rate'] * r['draws']:.1f} hits, p={r['p_value']:.2f}"]
                 for s, r in sampled.items()]
    return rows


def pooled(sampling: dict) -> tuple[int, int, float]:
    """Hits, draws and the hits the logits predict, over all sampling settings."""
    settings = sampling.values()
    return (sum(s["hits"] for s in settings), sum(s["draws"] for s in settings),
            sum(s["predicted_rate"] * s["draws"] for s in settings))
