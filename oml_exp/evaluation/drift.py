"""Drift, needing no benchmark data: how differently the fingerprinted model predicts the base model's own text.

The base model writes a continuation of each prompt once (greedy, stored with the base evaluation); on every token
it wrote, KL(base || fingerprinted) of the next-token distributions and whether both models' top-1 tokens agree.
The prompts (oml_exp/data/drift_prompts.json) were written for this project and share nothing with the benign text
training may mix in, so drift is measured on text no training step saw. A user's own text (`eval.drift_file`: one
text per line, or a JSON list of strings) replaces the prompts and is measured as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from oml_exp import base_text
from oml_exp.padding import left_pad

PROMPTS = Path(__file__).resolve().parent.parent / "data" / "drift_prompts.json"
BATCH = 8


def texts(model, tokenizer, count: int, new_tokens: int, user_file: Optional[str]) -> list[dict]:
    """Token ids of each benign text and the position its measured part starts at."""
    if user_file:
        return [{"ids": tokenizer(t).input_ids, "start": 1} for t in read_user_texts(Path(user_file))[:count]]
    prompts = json.loads(PROMPTS.read_text())[:count]
    return [{"ids": prompt + text, "start": len(prompt)}
            for prompt, text in base_text.write(model, tokenizer, prompts, new_tokens, BATCH)]


def read_user_texts(path: Path) -> list[str]:
    raw = path.read_text()
    rows = json.loads(raw) if path.suffix == ".json" else raw.splitlines()
    rows = [r for r in rows if isinstance(r, str) and r.strip()]
    if not rows:
        raise ValueError(f"eval.drift_file={path}: no texts (expected one per line, or a JSON list of strings)")
    return rows


@torch.inference_mode()
def measure(base, model, rows: list[dict], pad_id: int) -> dict:
    """Mean per-token KL(base || model) and top-1 agreement over the measured tokens of every text."""
    kl_sum, agree, tokens = 0.0, 0, 0
    for start in tqdm(range(0, len(rows), BATCH), desc="drift", unit="batch", leave=False):
        batch = rows[start:start + BATCH]
        seqs = [r["ids"] for r in batch]
        p, q = (_logprobs(m, seqs, pad_id) for m in (base, model))
        for i, r in enumerate(batch):
            # Left padding: text position j sits at column width - len + j; position j - 1 predicts token j.
            offset = p.shape[1] - len(r["ids"])
            cols = slice(offset + r["start"] - 1, p.shape[1] - 1)
            pi, qi = p[i, cols], q[i, cols]
            kl_sum += float((pi.exp() * (pi - qi)).sum())
            agree += int((pi.argmax(-1) == qi.argmax(-1)).sum())
            tokens += pi.shape[0]
    return {"kl": kl_sum / tokens, "top1_agreement": agree / tokens, "tokens": tokens, "texts": len(rows)}


def _logprobs(model, seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    ids, mask, positions = left_pad(seqs, pad_id, model.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    return logits.float().log_softmax(-1)
