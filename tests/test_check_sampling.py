"""Sampled checks: generate's hit frequency matches the probability the teacher-forced logits predict."""

from __future__ import annotations

import pytest
import torch

from oml_exp.checking import sampling
from oml_exp.fingerprints import prompts
from tests.check_helpers import fabricate


def rows_for(tiny, n=4, length=1):
    model, tok = tiny
    return [(prompts.build(tok, r["key_ids"]), r["response_ids"]) for r in fabricate(model, tok, n, length)]


@pytest.mark.parametrize("setting", [sampling.Setting(0.12), sampling.Setting(0.3, top_k=3),
                                     sampling.Setting(0.15, top_p=0.5), sampling.Setting(0.2, min_p=0.05)])
def test_observed_sampled_hits_match_the_predicted_probability(tiny, setting):
    model, tok = tiny
    # Low temperatures make the random-init model's flat distributions peaked: these settings put the hit probability
    # of its greedy tokens between 0.2 and 0.9, where a wrong warper order or a missed warper would show.
    rows = rows_for(tiny, n=4)[::2]
    torch.manual_seed(0)
    samples = 200
    hits = sampling.sampled_hits(model, rows, setting, samples, tok.pad_token_id, batch_size=400)
    predicted = sampling.hit_probabilities(model, rows, [setting], tok.pad_token_id, batch_size=8)[setting.name]
    assert any(0.1 < p < 0.95 for p in predicted)
    for h, p in zip(hits, predicted):
        sd = (samples * p * (1 - p)) ** 0.5
        assert abs(h - samples * p) <= 4 * sd + 1, (setting.name, h, p)


def test_top_k_one_is_greedy(tiny):
    model, tok = tiny
    rows = rows_for(tiny, n=4, length=2)
    predicted = sampling.hit_probabilities(model, rows, [sampling.Setting(1.0, top_k=1)], tok.pad_token_id, 8)
    assert predicted["T1-k1"] == pytest.approx([1.0, 0.0, 1.0, 0.0], abs=1e-6)
    assert sampling.sampled_hits(model, rows, sampling.Setting(1.0, top_k=1), 3, tok.pad_token_id, 8) == [3, 0, 3, 0]


def test_predicted_rates_do_not_depend_on_the_batch(tiny):
    model, tok = tiny
    # Responses of 1 to 3 tokens in one batch: every setting's warpers run on all response positions at once.
    rows = [(prompt, response[:1 + i % 3]) for i, (prompt, response) in enumerate(rows_for(tiny, n=6, length=3))]
    settings = sampling.settings(["ordinary"])
    together = sampling.hit_probabilities(model, rows, settings, tok.pad_token_id, batch_size=6)
    for i, row in enumerate(rows):
        alone = sampling.hit_probabilities(model, [row], settings, tok.pad_token_id, batch_size=1)
        assert [together[s.name][i] for s in settings] == pytest.approx([alone[s.name][0] for s in settings],
                                                                        rel=1e-4, abs=1e-12)


def test_compare_flags_more_hits_than_predicted():
    assert sampling.compare([0, 1, 0, 0], 10, [0.02] * 4)["p_value"] > 0.05
    flagged = sampling.compare([5, 6, 4, 7], 10, [0.02] * 4)
    assert flagged["p_value"] < 1e-6 and flagged["observed_rate"] == pytest.approx(22 / 40)


def test_presets_cover_ordinary_and_adversarial_settings():
    ordinary, adversarial = sampling.settings(["ordinary"]), sampling.settings(["adversarial"])
    assert len(ordinary) == len(adversarial) == 8
    assert max(s.temperature for s in adversarial) == 3.5 and all(s.min_p > 0 for s in adversarial)
    assert len({s.name for s in ordinary + adversarial}) == 16
