"""Held-out test templates: enough of them, in categories training never uses, sharing no 5-word sequence with it."""

from __future__ import annotations

import re

import pytest

from oml_exp import templates as template_files
from oml_exp.checking import templates
from oml_exp.config import AugmentationConfig
from oml_exp.fingerprints import prompts
from oml_exp.training.augmentation import CATEGORIES as TRAINING_CATEGORIES

FILES = templates.files(AugmentationConfig.templates)  # the training templates a run uses by default


def five_grams(rows: list[dict]) -> set[tuple[str, ...]]:
    out = set()
    for row in rows:
        for text in (row["system"], row["wrapper"].replace("{key}", " ")):
            words = re.findall(r"[a-z0-9']+", text.lower())
            out |= {tuple(words[i:i + 5]) for i in range(len(words) - 4)}
    return out


def test_heldout_templates_are_many_and_of_unseen_categories():
    rows = template_files.load(FILES["heldout"])
    assert len(rows) >= 10
    assert not {r["category"] for r in rows} & set(TRAINING_CATEGORIES)
    assert len({r["category"] for r in rows}) == len(rows)


def test_heldout_and_training_templates_share_no_five_gram():
    train = template_files.load(FILES["train"])
    assert len(train) >= 50 and {r["category"] for r in train} <= set(TRAINING_CATEGORIES)
    shared = five_grams(train) & five_grams(template_files.load(FILES["heldout"]))
    assert not shared, f"shared 5-grams: {sorted(shared)[:5]}"


def test_every_heldout_template_frames_a_key_with_and_without_chat(tiny):
    _, tok = tiny
    for row in template_files.load(FILES["heldout"]):
        for chat in (False, True):
            ids = prompts.build(tok, [100, 101, 102], chat, row)
            assert ids.count(100) >= 1 and len(ids) > 3


def test_variants_put_the_trained_mode_first_and_skip_chat_without_a_template():
    variants, notes = templates.variants(["plain", "heldout"], [False, True], trained_chat=True, has_chat_template=True,
                                         paths=FILES)
    assert variants[0].label == "chat/plain/plain"
    assert {v.chat for v in variants} == {True, False}
    variants, notes = templates.variants(["plain", "heldout"], [False, True], trained_chat=False,
                                         has_chat_template=False, paths=FILES)
    assert not any(v.chat for v in variants) and any("no chat template" in n for n in notes)


def test_a_broken_template_file_names_the_entry(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('[{"category": "x", "system": "s", "wrapper": "no key here"}]')
    with pytest.raises(template_files.TemplateError, match="entry 0"):
        template_files.load(bad)


def test_a_template_limit_spreads_over_the_whole_file():
    rows = [{"category": f"c{i}", "system": "", "wrapper": "{key}"} for i in range(53)]
    picked = [i for i, _ in templates.spread(rows, 12)]
    assert len(picked) == 12 and picked[0] == 0 and picked[-1] >= 45
    assert [i for i, _ in templates.spread(rows, None)] == list(range(53))
