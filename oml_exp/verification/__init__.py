"""The verify step (see stage.py): fingerprints asked of a deployed model over an OpenAI-compatible API, a ledger
of the ones spent, and the evidence."""

from oml_exp.verification.stage import run

__all__ = ["run"]
