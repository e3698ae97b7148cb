"""What a verification shows: m of n fingerprints answered, and how likely that many are by chance.

The p-value is P(X >= m) for X ~ Binomial(n, r), where r is the chance that a model never trained on a fingerprint
answers it anyway. r is measured over the whole fingerprint pool on such models (the base model by default), locally
and greedily with the check stage's batched scoring, so measuring it spends no fingerprint. With no hit in that
measurement, r is its one-sided 95% Clopper-Pearson upper bound rather than 0, which would make every match
impossible by chance. Sampled requests can hit more often than greedy ones, so in sampled mode r is at least the
probability, under the models' own logits, of sampling the response at that temperature.
"""

from __future__ import annotations

import statistics
import unicodedata

from scipy.stats import beta, binom

from oml_exp import models
from oml_exp.checking import sampling, templates
from oml_exp.checking.stage import Checker, response_ids

CONFIDENCE = 0.95


def normalize(text: str) -> str:
    """How answers and responses are compared: Unicode NFC, runs of whitespace as one space, none at the ends
    (servers differ in whether the first token's leading space survives decoding)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def matched(answers: dict, expected: dict[int, str], eos: bool) -> list[int]:
    """The indices whose answer's text is the response's (`expected`, normalized; an empty one never matches), and
    whose answer then ended at EOS when training appended it."""
    return [i for i, answer in answers.items() if expected[i] and normalize(answer.text) == expected[i]
            and (not eos or answer.finish_reason == "stop")]


def chance(cfg, pool: list[dict], tokenizer) -> dict:
    """Greedy hits over the whole pool on each model of verify.false_positive_models, and the rate r they give."""
    checker = Checker(cfg, tokenizer, pool, response_ids(pool, tokenizer, cfg.fingerprints.eos))
    plain = templates.Variant("plain", "plain", "plain", cfg.fingerprints.chat_template)
    setting = sampling.Setting(cfg.verify.temperature) if cfg.verify.temperature > 0 else None
    specs = [cfg.model.path if s == "base" else s for s in cfg.verify.false_positive_models]
    hits, predicted = 0, []
    for spec in specs:
        model, _ = models.load(spec, cfg.device, cfg.model.dtype)
        hits += sum(s.exact for s in checker.greedy(model, [plain], "chance")[plain])
        if setting is not None:
            predicted += sampling.hit_probabilities(model, checker.prompt_rows(plain), [setting],
                                                    tokenizer.pad_token_id, cfg.check.batch_size)[setting.name]
        del model
    return {"models": specs, **rate(hits, len(pool) * len(specs), predicted, cfg.verify.temperature)}


def rate(hits: int, trials: int, predicted: list[float], temperature: float) -> dict:
    out = {"hits": hits, "trials": trials, "measured_rate": hits / trials, "rate": hits / trials,
           "basis": f"measured: {hits} greedy hits in {trials}"}
    if hits == 0:
        out["rate"] = float(beta.ppf(CONFIDENCE, 1, trials))
        out["basis"] = f"one-sided {CONFIDENCE:.0%} Clopper-Pearson upper bound: 0 greedy hits in {trials}"
    if predicted:
        out["predicted_sampled_rate"] = statistics.fmean(predicted)
        if out["predicted_sampled_rate"] > out["rate"]:
            out["rate"] = out["predicted_sampled_rate"]
            out["basis"] = f"predicted rate of sampling the response at temperature {temperature:g}"
    return out


def p_value(matched: int, sent: int, r: float) -> float:
    """P(at least `matched` of `sent` fingerprints answered by chance), each with probability r."""
    return float(binom.sf(matched - 1, sent, r))


def assumptions(report: dict) -> list[str]:
    c = report["chance"]
    return [
        f"Each of the {report['sent']} fingerprints is answered by chance independently, with the same probability "
        f"r = {c['rate']:.4g}; m is then Binomial({report['sent']}, r) and p = P(X >= m).",
        f"r comes from {c['trials']} checks of the whole pool of {report['pool']} fingerprints on "
        f"{', '.join(c['models'])} (never fingerprinted with them), run locally and greedily ({c['basis']}). A model "
        "of another family or training could answer by chance more often than these.",
        "A fingerprint matches when the answer's first tokens, as text, equal the response's text after the same "
        "normalization (Unicode NFC, whitespace runs as one space, none at the ends); r counts exact token matches. "
        "A response that is only whitespace as text cannot be told apart and never counts as matched.",
        "The server tokenizes the key text as the fingerprinted model's tokenizer does, and applies the same chat "
        "template; fingerprints whose text tokenizes otherwise (see the notes) are asked a different prompt than "
        "the one trained.",
        "The fingerprints sent were never shown to this endpoint before (the ledger), so the model behind it cannot "
        "have been tuned to them; fingerprints sent again with verify.force_spent are listed in the notes.",
    ]


def markdown(report: dict) -> str:
    c = report["chance"]
    rows = [("endpoint", f"{report['endpoint']} (model `{report['model']}`)"),
            ("asked", f"{report['sent']} fingerprints by {report['api']}, {report['mode']}"),
            ("matched", f"{report['matched']} of {report['sent']}"),
            ("matched indices", ", ".join(map(str, report["matched_indices"])) or "none"),
            ("sent indices", ", ".join(map(str, report["sent_indices"]))),
            ("chance rate r", f"{c['rate']:.4g} ({c['basis']})"),
            ("p-value", f"{report['p_value']:.3g} (m or more of n matched by chance)"),
            ("fingerprint file", f"`{report['fingerprint_file']}` (sha256 {report['fingerprint_digest']}..., "
                                 f"{report['pool']} fingerprints)"),
            ("ledger", f"`{report['ledger']}`"),
            ("time", report["time"])]
    lines = ["# Ownership evidence", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
             "## Assumptions", "", *[f"- {a}" for a in report["assumptions"]]]
    if report["notes"]:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"
