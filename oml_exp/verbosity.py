"""How much the libraries under the stages say: `verbose` (oml_exp/config.py).

At 0 (the default) they report errors only and draw none of their progress bars (weights loaded and written, dataset
splits), so the terminal and the job log hold the stages' own lines and progress bars; the Trainer's per-step dicts
go too (finetune: log.jsonl keeps every step). From 1 on they say what they would by themselves. Both ways are set
explicitly: the jobs of a multirun share one process.
"""

from __future__ import annotations

import logging


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


# DeepSpeed sets its logger's level when it is imported, and warns during that import: a filter outlasts both.
DEEPSPEED_FILTER = _ErrorsOnly()


def configure(verbose: int) -> None:
    import datasets.utils
    import transformers

    quiet = verbose == 0
    level = logging.ERROR if quiet else logging.WARNING
    transformers.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(level)
    for name in ("lm_eval", "accelerate"):
        logging.getLogger(name).setLevel(level)
    deepspeed = logging.getLogger("DeepSpeed")
    (deepspeed.addFilter if quiet else deepspeed.removeFilter)(DEEPSPEED_FILTER)
    # transformers' switch covers huggingface_hub's bars too
    (transformers.logging.disable_progress_bar if quiet else transformers.logging.enable_progress_bar)()
    (datasets.utils.disable_progress_bars if quiet else datasets.utils.enable_progress_bars)()


def trainer_log_level(verbose: int) -> str:
    """TrainingArguments.log_level: the Trainer sets transformers' verbosity from it when it starts."""
    return "error" if verbose == 0 else "warning"
