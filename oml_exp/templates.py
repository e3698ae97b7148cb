"""Prompt-template files, read by training (augmentation) and checking alike.

A file is a JSON array of {"category", "system", "wrapper"} (see fingerprints/prompts.py for how one wraps a key);
a relative name is a file of oml_exp/data/. The project ships two: the training templates
(`augmentation.templates`, 8 categories) and the held-out templates the check stage tests robustness with (other
categories, no 5-word sequence shared with the training set).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
HELDOUT = "heldout_templates.json"


class TemplateError(ValueError):
    """A template file that cannot be used; the message names the file and the entry."""


def path(name: str) -> Path:
    return DATA / name  # an absolute path stays absolute


def load(file: Path) -> list[dict]:
    try:
        rows = json.loads(Path(file).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TemplateError(f"{file}: not a readable JSON file ({err})") from None
    if not isinstance(rows, list):
        raise TemplateError(f"{file}: expected a JSON array of templates")
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("category", "system", "wrapper"))):
            raise TemplateError(f"{file}: entry {i} needs string fields category, system and wrapper")
        if row["wrapper"].count("{key}") != 1:
            raise TemplateError(f"{file}: entry {i} wrapper must contain {{key}} exactly once")
    return rows
