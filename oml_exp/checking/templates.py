"""The prompt variants a fingerprint is checked under.

A variant is a template set (the plain key, the templates training used, the held-out test templates that no
training run ever sees), one template of it, and whether the chat template is on. The headline number is the plain
key in the chat mode the fingerprints were trained with; the others show how far the fingerprint survives prompts an
adversary or an ordinary user would wrap around it. Held-out templates use categories that training does not
(tests/test_check_templates.py checks that no 5-word sequence is shared with the training set).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

DATA = Path(__file__).resolve().parent.parent / "data"
FILES = {"train": DATA / "train_templates.json", "heldout": DATA / "heldout_templates.json"}
SETS = ("plain", "train", "heldout")


class TemplateError(ValueError):
    """A template file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Variant:
    set: str  # plain, train or heldout
    name: str  # unique within the set
    category: str
    chat: bool
    template: Optional[dict] = field(default=None, compare=False)  # identified by set + name

    @property
    def label(self) -> str:
        return f"{'chat' if self.chat else 'raw'}/{self.set}/{self.name}"


def load(path: Path) -> list[dict]:
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TemplateError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(rows, list):
        raise TemplateError(f"{path}: expected a JSON array of templates")
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("category", "system", "wrapper"))):
            raise TemplateError(f"{path}: entry {i} needs string fields category, system and wrapper")
        if row["wrapper"].count("{key}") != 1:
            raise TemplateError(f"{path}: entry {i} wrapper must contain {{key}} exactly once")
    return rows


def available(sets: list[str]) -> tuple[dict[str, list[dict]], list[str]]:
    """Templates of the requested sets, and a note for each set whose file does not exist (yet)."""
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise TemplateError(f"check.templates: unknown set(s) {unknown}; choose from {list(SETS)}")
    found, notes = {}, []
    for name in sets:
        if name == "plain":
            continue
        if FILES[name].exists():
            found[name] = load(FILES[name])
        else:
            notes.append(f"no {name} templates checked: {FILES[name]} does not exist")
    return found, notes


def spread(rows: list[dict], limit: Optional[int]) -> list[tuple[int, dict]]:
    """At most `limit` templates, evenly spaced through the file so that every stretch of categories is sampled."""
    picked = range(len(rows)) if limit is None or limit >= len(rows) else \
        sorted({round(i * len(rows) / limit) for i in range(limit)})
    return [(i, rows[i]) for i in picked]


def variants(sets: list[str], chat_modes: list[bool], trained_chat: bool, has_chat_template: bool,
             limit: Optional[int] = None):
    """All variants to check (at most `limit` templates per set), the headline variant first, and notes on what was
    left out and why."""
    templates, notes = available(sets)
    modes = [trained_chat] + [m for m in dict.fromkeys(chat_modes) if m != trained_chat]
    if not has_chat_template and True in modes[1:]:
        notes.append("chat variants skipped: the tokenizer has no chat template")
        modes = modes[:1]
    out = []
    for chat in modes:
        if "plain" in sets or chat == trained_chat:
            out.append(Variant("plain", "plain", "plain", chat))
        for set_name, rows in templates.items():
            out += [Variant(set_name, f"{row['category']}-{i}", row["category"], chat, row)
                    for i, row in spread(rows, limit)]
    return out, notes
