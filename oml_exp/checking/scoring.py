"""Teacher-forced scoring: what greedy decoding would answer, read off one forward pass.

Greedy decoding reproduces a response exactly when, with prompt + response fed in, the argmax at every position that
predicts a response token equals that token: each greedy step sees exactly the prefix the forward pass saw. So one
batched forward pass over all fingerprints replaces one `generate` call per fingerprint, and the same logits give the
rank and probability of every response token (for false positives) at no extra cost.

Rows are left-padded so every row ends at the last position: the model then computes logits only for the last few
positions (`logits_to_keep`), which skips the vocabulary projection for the whole prompt. The last response token
is never fed in, since nothing is predicted from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from oml_exp.padding import left_pad


@dataclass
class Scored:
    """One (prompt, response) row: per response token, greedy agreement, rank and log-probability."""

    hits: list[bool]
    ranks: list[int]
    logprobs: list[float]

    @property
    def exact(self) -> bool:
        return all(self.hits)


@torch.inference_mode()
def last_logits(model, seqs: list[list[int]], keep: int, pad_id: int) -> torch.Tensor:
    """Logits (fp32) at the last `keep` positions of each left-padded sequence: [batch, keep, vocab]."""
    ids, mask, positions = left_pad(seqs, pad_id, model.device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep, use_cache=False)
    return out.logits[:, -keep:].float()


def score(model, rows: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int,
          desc: str = "check") -> list[Scored]:
    """Score (prompt_ids, response_ids) rows in batches of similar length; results in the input order."""
    results: list[Scored | None] = [None] * len(rows)
    batches = by_length(rows, batch_size)
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False, disable=len(batches) < 2):
        for i, scored in zip(batch, score_batch(model, [rows[i] for i in batch], pad_id)):
            results[i] = scored
    return results


def by_length(rows: list[tuple[list[int], list[int]]], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar total length, so that little of a batch is padding."""
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i][0]) + len(rows[i][1]), i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def teacher_forced(model, rows: list[tuple[list[int], list[int]]], pad_id: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits that predict each response token from the true prefix, [rows, longest response, vocab], with the
    response tokens [rows, longest] and where they are [rows, longest] (responses end at the last position; shorter
    ones leave filler in front, which `valid` marks False). All on the model's device."""
    longest = max(len(response) for _, response in rows)
    # Position t predicts token t+1: prompt + response[:-1] ends exactly at the prediction of the last response token.
    logits = last_logits(model, [prompt + response[:-1] for prompt, response in rows], longest, pad_id)
    targets = torch.tensor([[0] * (longest - len(r)) + list(r) for _, r in rows], device=logits.device)
    valid = torch.tensor([[False] * (longest - len(r)) + [True] * len(r) for _, r in rows], device=logits.device)
    return logits, targets, valid


@torch.inference_mode()
def score_batch(model, rows: list[tuple[list[int], list[int]]], pad_id: int) -> list[Scored]:
    logits, targets, _ = teacher_forced(model, rows, pad_id)
    chosen = logits.gather(-1, targets[..., None])
    # Batched over rows and positions, read back once: filler positions cost a little arithmetic, not a sync each.
    hits = (logits.argmax(-1) == targets).tolist()
    ranks = (logits > chosen).sum(-1).tolist()
    logprobs = (chosen[..., 0] - logits.logsumexp(-1)).tolist()
    return [Scored(hits=h[len(h) - len(r):], ranks=k[len(k) - len(r):], logprobs=lp[len(lp) - len(r):])
            for h, k, lp, (_, r) in zip(hits, ranks, logprobs, rows)]
