"""Prompt augmentation: the training templates that wrap keys, drawn per example per epoch (see data.py).

Training templates use only the categories below; the check stage's held-out templates use others, so robustness
is measured on framings the model never saw.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from oml_exp.config import ConfigError

DATA = Path(__file__).resolve().parent.parent / "data"
CATEGORIES = ("persona", "style", "task_framing", "formatting", "politeness", "roleplay", "instruction_prefix",
              "context_suffix")


def path(cfg: DictConfig) -> Path | None:
    if cfg.augmentation.templates is None:
        return None
    return DATA / cfg.augmentation.templates  # an absolute path stays absolute


def load(cfg: DictConfig) -> list[dict] | None:
    """The training templates, checked; None when augmentation is off."""
    file = path(cfg)
    if file is None or cfg.augmentation.fraction == 0:
        return None
    try:
        templates = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"augmentation.templates={file}: not a readable JSON file ({err})") from None
    for i, t in enumerate(templates):
        _check(file, i, t)
    return templates


def _check(file: Path, i: int, t: dict) -> None:
    where = f"augmentation.templates={file}: entry {i}"
    if not isinstance(t, dict) or not {"category", "system", "wrapper"} <= t.keys():
        raise ConfigError(f"{where} needs the keys category, system and wrapper")
    if t["category"] not in CATEGORIES:
        raise ConfigError(f"{where} has category {t['category']!r}; training templates use only {CATEGORIES}")
    if t["wrapper"].count("{key}") != 1:
        raise ConfigError(f"{where}: wrapper must contain {{key}} exactly once")
