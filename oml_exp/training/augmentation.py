"""Prompt augmentation: the training templates that wrap keys, drawn per example per epoch (see data.py).

Training templates use only the categories below; the check stage's held-out templates use others, so robustness
is measured on framings the model never saw.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from oml_exp import templates
from oml_exp.config import ConfigError

CATEGORIES = ("persona", "style", "task_framing", "formatting", "politeness", "roleplay", "instruction_prefix",
              "context_suffix")


def path(augmentation: DictConfig) -> Path:
    return templates.path(augmentation.templates)


def load(augmentation: DictConfig) -> list[dict] | None:
    """The training templates, checked; None when augmentation is off."""
    if augmentation.fraction == 0:
        return None
    file = path(augmentation)
    try:
        rows = templates.load(file)
    except templates.TemplateError as err:
        raise ConfigError(f"augmentation.templates: {err}") from None
    for i, t in enumerate(rows):
        if t["category"] not in CATEGORIES:
            raise ConfigError(f"augmentation.templates={file}: entry {i} has category {t['category']!r}; training "
                              f"templates use only {CATEGORIES}")
    return rows
