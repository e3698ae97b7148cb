"""Which fingerprints a model recalls, in one teacher-forced forward pass per batch.

Greedy decoding reproduces a response exactly iff the argmax at every response position (given the true previous
tokens) is the response token, so this equals the check stage's exact match at a fraction of its cost: used by the
tests and the benchmark to count steps to full recall.
"""

from __future__ import annotations

import torch

from oml_exp.training.data import IGNORE, Collator


@torch.no_grad()
def recalled(model, examples: list[dict], collator: Collator, batch_size: int = 64) -> list[bool]:
    hits = []
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(model.device) for k, v in collator(examples[i:i + batch_size]).items()}
        labels = batch.pop("labels")
        predicted = model(**batch).logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        scored = target != IGNORE
        hits += ((predicted == target) | ~scored).all(-1).tolist()
    return hits
