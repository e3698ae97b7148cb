"""Fingerprints under sampling: observed hits from `generate`, and the hit rate the logits predict.

A sampled continuation equals the response only if every step draws the response token given the response prefix,
so the exact probability of a sampled hit is the product, over response positions of one teacher-forced pass, of
the response token's probability after the same warpers `generate` applies (temperature, top-k, top-p, min-p, in
generate's order). Observed hits are then compared with that prediction: on a model never fingerprinted with these
keys, more hits than predicted would mean the check is not measuring what it claims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import binomtest
from tqdm.auto import tqdm
from transformers import (GenerationConfig, LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from oml_exp.checking.scoring import teacher_forced
from oml_exp.padding import left_pad


@dataclass(frozen=True)
class Setting:
    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0

    @property
    def name(self) -> str:
        parts = [f"T{self.temperature:g}"]
        parts += [f"p{self.top_p:g}"] if self.top_p < 1.0 else []
        parts += [f"k{self.top_k}"] if self.top_k else []
        parts += [f"minp{self.min_p:g}"] if self.min_p else []
        return "-".join(parts)

    def warpers(self) -> LogitsProcessorList:
        """The warpers `generate` builds for this setting, in its order."""
        warpers = LogitsProcessorList()
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(self.top_p))
        if self.min_p:
            warpers.append(MinPLogitsWarper(self.min_p))
        return warpers

    def generation_config(self, new_tokens: int, samples: int, pad_id: int) -> GenerationConfig:
        # generate fills unset (None) fields from the model's own generation defaults, so set every warper and
        # penalty explicitly. EOS may end a draw early (a miss); forcing a minimum length would mask EOS and bend
        # the distribution away from the one the prediction uses.
        return GenerationConfig(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                                min_p=self.min_p, repetition_penalty=1.0, max_new_tokens=new_tokens,
                                num_return_sequences=samples, pad_token_id=pad_id)


# Settings a user of a suspect model might sample with, and settings an adversary picks to make rare tokens likely
# (high temperature, with min-p keeping the text readable).
PRESETS = {
    "ordinary": [Setting(0.6, top_p=0.9), Setting(0.7, top_p=0.95), Setting(0.8, top_k=50), Setting(1.0),
                 Setting(1.0, top_p=0.9), Setting(1.0, top_k=40), Setting(1.2, top_p=0.95), Setting(1.5, top_k=100)],
    "adversarial": [Setting(1.5, min_p=0.05), Setting(2.0, min_p=0.05), Setting(2.0, min_p=0.1),
                    Setting(2.5, min_p=0.1), Setting(3.0, min_p=0.1), Setting(3.0, min_p=0.2),
                    Setting(3.5, min_p=0.2), Setting(3.5, min_p=0.3)],
}


def settings(presets: list[str]) -> list[Setting]:
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ValueError(f"check.fp_sampling: unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    return [s for p in presets for s in PRESETS[p]]


def progress(total: int, step: int, desc: str):
    """Batch starts over `total` rows, with a progress bar when there is more than one batch."""
    starts = range(0, total, step)
    return tqdm(starts, desc=desc, unit="batch", leave=False, disable=len(starts) < 2)


@torch.inference_mode()
def sampled_hits(model, rows: list[tuple[list[int], list[int]]], setting: Setting, samples: int, pad_id: int,
                 batch_size: int) -> list[int]:
    """For each (prompt, response) row: how many of `samples` sampled continuations equal the response; each
    generate call draws all samples of batch_size // samples rows."""
    hits = []
    per_call = max(1, batch_size // samples)
    for start in progress(len(rows), per_call, f"sampled {setting.name}"):
        hits += _sample_batch(model, rows[start:start + per_call], setting, samples, pad_id)
    return hits


def _sample_batch(model, rows, setting: Setting, samples: int, pad_id: int) -> list[int]:
    longest = max(len(response) for _, response in rows)
    ids, mask, _ = left_pad([prompt for prompt, _ in rows], pad_id, model.device)
    out = model.generate(input_ids=ids, attention_mask=mask,
                         generation_config=setting.generation_config(longest, samples, pad_id))
    drawn = out[:, ids.shape[1]:].reshape(len(rows), samples, -1).tolist()
    return [sum(d[:len(response)] == response for d in draws) for draws, (_, response) in zip(drawn, rows)]


@torch.inference_mode()
def hit_probabilities(model, rows: list[tuple[list[int], list[int]]], settings_: list[Setting], pad_id: int,
                      batch_size: int) -> dict[str, list[float]]:
    """Per setting, the exact probability that one sampled continuation of each row equals its response: one
    teacher-forced pass per batch, every setting's warpers applied to all its response positions at once."""
    probs: dict[str, list[float]] = {s.name: [] for s in settings_}
    for start in progress(len(rows), batch_size, "predicted"):
        logits, targets, valid = teacher_forced(model, rows[start:start + batch_size], pad_id)
        scores, target = logits[valid], targets[valid][:, None]  # [response positions, vocab], [positions, 1]
        per_setting = []
        for s in settings_:
            # The warpers only read input_ids for penalties, which no setting here uses.
            logp = s.warpers()(target, scores.clone()).log_softmax(-1).gather(1, target)[:, 0]
            per_row = torch.zeros(valid.shape, dtype=logp.dtype, device=logp.device).masked_scatter(valid, logp)
            per_setting.append(per_row.sum(-1).exp())
        for s, p in zip(settings_, torch.stack(per_setting).tolist()):
            probs[s.name] += p
    return probs


def compare(hits: list[int], samples: int, predicted: list[float]) -> dict:
    """Observed sampled hits against the predicted rate; p = the chance of at least this many hits if the prediction
    holds (a tiny p says the model says the responses more often than its logits explain)."""
    draws = samples * len(hits)
    observed = sum(hits)
    rate = sum(predicted) / len(predicted)
    p_value = math.nan
    if draws:
        p_value = float(binomtest(observed, draws, min(max(rate, 1e-12), 1.0), alternative="greater").pvalue)
    return {"hits": observed, "draws": draws, "observed_rate": observed / draws if draws else math.nan,
            "predicted_rate": rate, "p_value": p_value}
