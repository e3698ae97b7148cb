"""The prompt variants a fingerprint is checked under.

A variant is a template set (the plain key, the templates training used, the held-out test templates that no
training run ever sees), one template of it, and whether the chat template is on. The headline number is the plain
key in the chat mode the fingerprints were trained with; the others show how far the fingerprint survives prompts an
adversary or an ordinary user would wrap around it. Held-out templates use categories that training does not
(tests/test_check_templates.py checks that no 5-word sequence is shared with the training set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from oml_exp import templates as prompt_templates
from oml_exp.templates import TemplateError

SETS = ("plain", "train", "heldout")


def files(training: str) -> dict[str, Path]:
    """The template files of the sets: `training` is the run's augmentation.templates."""
    return {"train": prompt_templates.path(training), "heldout": prompt_templates.path(prompt_templates.HELDOUT)}


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


def available(sets: list[str], paths: dict[str, Path]) -> tuple[dict[str, list[dict]], list[str]]:
    """Templates of the requested sets, and a note for each set whose file does not exist (yet)."""
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise TemplateError(f"check.templates: unknown set(s) {unknown}; choose from {list(SETS)}")
    found, notes = {}, []
    for name in sets:
        if name == "plain":
            continue
        if paths[name].exists():
            found[name] = prompt_templates.load(paths[name])
        else:
            notes.append(f"no {name} templates checked: {paths[name]} does not exist")
    return found, notes


def spread(rows: list[dict], limit: Optional[int]) -> list[tuple[int, dict]]:
    """At most `limit` templates, evenly spaced through the file so that every stretch of categories is sampled."""
    picked = range(len(rows)) if limit is None or limit >= len(rows) else \
        sorted({round(i * len(rows) / limit) for i in range(limit)})
    return [(i, rows[i]) for i in picked]


def variants(sets: list[str], chat_modes: list[bool], trained_chat: bool, has_chat_template: bool,
             paths: dict[str, Path], limit: Optional[int] = None):
    """All variants to check (at most `limit` templates per set), the headline variant first, and notes on what was
    left out and why."""
    templates, notes = available(sets, paths)
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
