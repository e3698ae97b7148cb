"""distill: a fresh copy of the base model trained to imitate the fingerprinted model on ordinary prompts.

The teacher (the attacked model) answers the attack prompts greedily; the student (the base model, which never saw
a key) learns its next-token distributions over those answers (loss=logits, KL at a temperature) or the answers'
text (loss=text). Whether fingerprints transfer is what the check of the student measures: the keys never appear in
what the student is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import Trainer

from oml_exp.attacks import training
from oml_exp.attacks.base import Context, load
from oml_exp.errors import require
from oml_exp.training.data import IGNORE

LOSSES = ("logits", "text")


@dataclass
class Distill(training.TrainingAttack):
    name: str = "distill"
    lr: float = 5e-5
    loss: str = "logits"  # logits: KL to the teacher's next-token distribution; text: cross-entropy on its answers
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.loss in LOSSES, f"attack.{self.name}.loss={self.loss!r} is not one of {', '.join(LOSSES)}")
        require(self.temperature > 0, f"attack.{self.name}.temperature must be > 0, got {self.temperature}")

    def apply(self, ctx: Context) -> dict:
        teacher, tokenizer = load(ctx.source, ctx)
        teacher.to(ctx.dtype)
        examples = training.written(teacher, tokenizer, self.response_tokens, self.seq_len)
        student, _ = load(ctx.base, ctx)
        extra = {"teacher": teacher, "temperature": self.temperature} if self.loss == "logits" else {}
        trainer, figures = training.train(student, tokenizer, examples, self, ctx,
                                          _Distiller if extra else Trainer, **extra)
        training.save(trainer, tokenizer, ctx)
        return {**figures, "loss": self.loss}


class _Distiller(Trainer):
    """The Trainer with the student's loss replaced by KL(teacher || student) over the answer tokens."""

    def __init__(self, *args, teacher, temperature: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval()
        self.temperature = temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        out = model(**inputs)
        with torch.no_grad():
            target = self.teacher(**inputs).logits
        # Logits at position i predict token i + 1: the answer's tokens are the labels shifted by one.
        answer = (labels[:, 1:] != IGNORE)
        t = self.temperature
        student = F.log_softmax(out.logits[:, :-1][answer].float() / t, dim=-1)
        teacher = F.log_softmax(target[:, :-1][answer].float() / t, dim=-1)
        loss = F.kl_div(student, teacher, log_target=True, reduction="batchmean") * t * t
        return (loss, out) if return_outputs else loss
