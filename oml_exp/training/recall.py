"""Which fingerprints a model recalls, in one teacher-forced forward pass per batch; and the stop on recall.

Greedy decoding reproduces a response exactly iff the argmax at every response position (given the true previous
tokens) is the response token, so this equals the check stage's exact match at a fraction of its cost.
"""

from __future__ import annotations

import math
import torch
import torch.distributed as dist
from transformers import TrainerCallback

from oml_exp.training.batching import epoch_steps
from oml_exp.training.data import IGNORE, Collator


def batches(examples: list[dict], collator: Collator, batch_size: int) -> list[dict]:
    """The examples collated once, `batch_size` per batch, with the positions whose next token is scored (`keep`)
    and those tokens (`targets`): the check then computes logits only there, not over the whole vocabulary at every
    prompt position."""
    out = []
    for i in range(0, len(examples), batch_size):
        batch = collator(examples[i:i + batch_size])
        labels = batch.pop("labels")
        keep = (labels[:, 1:] != IGNORE).any(0).nonzero().flatten()  # position j predicts token j + 1
        out.append({**batch, "keep": keep, "targets": labels[:, keep + 1]})
    return out


@torch.no_grad()
def hits(model, collated: list[dict]) -> list[bool]:
    """Per example of the pre-collated batches: is its whole response the greedy continuation?"""
    out = []
    for batch in collated:
        batch = {k: v.to(model.device) for k, v in batch.items()}
        keep, targets = batch.pop("keep"), batch.pop("targets")
        predicted = model(**batch, logits_to_keep=keep).logits.argmax(-1)
        out += ((predicted == targets) | (targets == IGNORE)).all(-1).tolist()
    return out


def recalled(model, examples: list[dict], collator: Collator, batch_size: int = 64) -> list[bool]:
    return hits(model, batches(examples, collator, batch_size))


class Stop(TrainerCallback):
    """Every `every` optimizer steps and at the end: the share of the training set (plain prompts) recalled; stops
    training once it reaches `target` (None: only logs it).

    Every rank runs the same forward passes over the whole set (ZeRO-3 gathers each layer's weights inside forward,
    so all ranks must take part), and the ranks agree on the lowest count, so all take the same decision. It runs
    after the regularizers' step-end hooks (averaging), so it judges the weights that a stop saves.
    Results go into the Trainer's log history (`recall` rows), which checkpoints keep.
    """

    def __init__(self, collated: list[dict], every: int | None, target: float | None):
        self.collated = collated
        self.n = sum(len(b["input_ids"]) for b in collated)
        self.every = every
        self.target = target

    def on_train_begin(self, args, state, control, **kwargs):
        self.period = self.every or epoch_steps(args, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.period == 0 and self.check(state, model) >= (self.target or math.inf):
            control.should_training_stop = True

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # A loss stop or the last step may fall between checks: the summary reports the final weights' recall.
        checked = [e["step"] for e in state.log_history if "recall" in e]
        if state.global_step and (not checked or checked[-1] != state.global_step):
            self.check(state, model)

    def check(self, state, model) -> float:
        rate = self.rate(model)
        state.log_history.append({"step": state.global_step, "recall": rate})
        return rate

    def rate(self, model) -> float:
        was_training = model.training
        model.eval()
        try:
            count = torch.tensor(sum(hits(model, self.collated)), device=model.device)
        finally:
            model.train(was_training)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count, op=dist.ReduceOp.MIN)
        return count.item() / self.n
