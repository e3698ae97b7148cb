"""The check stage (see stage.py): batched greedy checks, prompt templates, sampling and false positives."""

from oml_exp.checking.stage import key, run

__all__ = ["key", "run"]
