"""The check stage on the tiny model: batched teacher-forced greedy checks agree with generate, results stay secret."""

from __future__ import annotations

import functools
import json
import stat

import pytest
import torch

import oml_exp.checking as checking
from oml_exp.checking import scoring
from oml_exp.config import ConfigError
from oml_exp.fingerprints import prompts
from oml_exp.pipeline import Inputs
from tests.check_helpers import fabricate, greedy_response, perturbed_copy, save

TINY = "tiny:llama"


def test_teacher_forced_greedy_equals_generate_across_padding(tiny):
    model, tok = tiny
    # Keys of different lengths put different amounts of left padding into each batch.
    rows = fabricate(model, tok, 12, response_length=4, key_lengths=(5, 16, 9))
    scored = scoring.score(model, [(prompts.build(tok, r["key_ids"]), r["response_ids"]) for r in rows],
                           tok.pad_token_id, batch_size=5)
    for row, s in zip(rows, scored):
        generated = greedy_response(model, tok, row["key_ids"], len(row["response_ids"]))
        assert s.exact == (generated == row["response_ids"])
        # Past the first wrong token generate continues its own text, so only the first miss must coincide.
        first_miss = next((j for j, (g, r) in enumerate(zip(generated, row["response_ids"])) if g != r), None)
        assert (s.hits.index(False) if False in s.hits else None) == first_miss
    assert [s.exact for s in scored] == [i % 2 == 0 for i in range(12)]


def test_ranks_and_logprobs_match_an_unbatched_forward(tiny):
    model, tok = tiny
    row = fabricate(model, tok, 2, response_length=3)[1]
    prompt = prompts.build(tok, row["key_ids"])
    [s] = scoring.score(model, [(prompt, row["response_ids"])], tok.pad_token_id, batch_size=1)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + row["response_ids"]])).logits[0, len(prompt) - 1:-1]
    target = torch.tensor(row["response_ids"])
    chosen = logits.gather(1, target[:, None])
    assert s.ranks == (logits > chosen).sum(-1).tolist()
    assert s.logprobs == pytest.approx(logits.log_softmax(-1).gather(1, target[:, None])[:, 0].tolist(), abs=1e-4)
    assert s.ranks[-1] >= 1 and s.hits[-1] is False  # the changed last token is not the greedy one


def test_rows_with_responses_of_different_lengths_score_as_they_would_alone(tiny):
    model, tok = tiny
    # One batch holds responses of 1 to 4 tokens: the shorter ones leave filler positions that must not leak in.
    rows = [(prompts.build(tok, r["key_ids"]), r["response_ids"][:1 + i % 4])
            for i, r in enumerate(fabricate(model, tok, 8, response_length=4, key_lengths=(5, 16)))]
    together = scoring.score(model, rows, tok.pad_token_id, batch_size=8)
    for t, row in zip(together, rows):
        [alone] = scoring.score(model, [row], tok.pad_token_id, batch_size=1)
        assert len(t.hits) == len(row[1]) and (t.hits, t.ranks) == (alone.hits, alone.ranks)
        assert t.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


@pytest.fixture
def check_cfg(tiny_cfg):
    return functools.partial(tiny_cfg, "check.samples=2", "check.fp_sampling=[ordinary]")


def test_stage_reports_rates_per_variant_and_keeps_keys_out_of_the_summary(tiny, tmp_path, check_cfg):
    model, tok = tiny
    rows = fabricate(model, tok, 8, response_length=2)
    cfg = check_cfg("fingerprints.num=8", "check.temperatures=[1.0]", "check.false_positive_models=[]",
                    "check.max_templates=null")
    out = tmp_path / "check"
    out.mkdir()
    summary = checking.run(cfg, Inputs(model=TINY, base_model=TINY, fingerprints=save(tmp_path / "fp", rows)), out)

    assert summary["success_rate"] == 0.5 and summary["hits"] == 4
    assert summary["variants"]["raw/plain/plain"]["success_rate"] == 0.5
    assert summary["sets"]["raw/heldout"]["templates"] >= 10
    assert "chat/plain" in summary["sets"]  # the chat mode that was not trained is checked too
    assert summary["sampling"]["T1"]["draws"] == 16
    text = json.dumps(summary)
    assert all(r["key"] not in text and r["effective_key"] not in text for r in rows)
    results = out / checking.stage.RESULTS
    assert stat.S_IMODE(results.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    plain = [r for r in lines if r.get("variant") == "raw/plain/plain" and "exact" in r]
    assert [r["exact"] for r in plain] == [i % 2 == 0 for i in range(8)]


def test_false_positives_on_the_base_model(tiny, tmp_path, check_cfg):
    model, tok = tiny
    rows = fabricate(model, tok, 8, response_length=1)
    # The "fingerprinted" model is a noisy copy: the fabricated hits are the base's greedy answers, not its own.
    fingerprinted = perturbed_copy(model, tok, tmp_path / "other")
    cfg = check_cfg("fingerprints.num=8", "check.templates=[plain]", "check.chat=[false]", "check.temperatures=[]")
    out = tmp_path / "check"
    out.mkdir()
    summary = checking.run(cfg, Inputs(model=fingerprinted, base_model=TINY,
                                       fingerprints=save(tmp_path / "fp", rows)), out)
    base = summary["false_positives"]["base"]
    assert base["hits"] == 4  # the base says the even responses greedily
    assert base["top10_hits"] >= 4
    assert set(base["sampled"]) == {"T0.6-p0.9", "T0.7-p0.95", "T0.8-k50", "T1", "T1-p0.9", "T1-k40",
                                    "T1.2-p0.95", "T1.5-k100"}
    assert all(0 <= r["predicted_rate"] <= 1 and r["draws"] == 16 for r in base["sampled"].values())


def test_eos_is_checked_when_training_appends_it(tiny, tmp_path, check_cfg):
    model, tok = tiny
    rows = fabricate(model, tok, 4, response_length=2)
    cfg = check_cfg("fingerprints.num=4", "fingerprints.eos=true", "check.templates=[plain]", "check.chat=[false]",
                    "check.temperatures=[]")
    out = tmp_path / "check"
    out.mkdir()
    checking.run(cfg, Inputs(model=TINY, base_model=TINY, fingerprints=save(tmp_path / "fp", rows)), out)
    lines = [json.loads(line) for line in (out / checking.stage.RESULTS).read_text().splitlines()]
    assert all(len(r["token_hits"]) == len(rows[r["index"]]["response_ids"]) + 1 for r in lines)


def test_check_key_changes_with_check_settings_only(check_cfg):
    base = checking.key(check_cfg())
    assert checking.key(check_cfg("check.samples=3")) != base
    assert checking.key(check_cfg("eval.limit=7")) == base


@pytest.mark.parametrize("override, word", [("check.templates=[plain,paraphrased]", "check.templates"),
                                            ("check.fp_sampling=[wild]", "check.fp_sampling"),
                                            ("check.samples=0", "check.samples")])
def test_bad_check_settings_name_the_key(check_cfg, override, word):
    with pytest.raises(ConfigError, match=word):
        check_cfg(override)


@pytest.mark.slow
def test_teacher_forced_greedy_equals_generate_on_smollm2(smollm2):
    model, tok = smollm2
    rows = fabricate(model, tok, 16, response_length=8, key_lengths=(16, 11))
    scored = scoring.score(model, [(prompts.build(tok, r["key_ids"]), r["response_ids"]) for r in rows],
                           tok.pad_token_id, batch_size=8)
    assert [s.exact for s in scored] == [i % 2 == 0 for i in range(16)]
    assert all(s.hits[:-1] == [True] * 7 and s.ranks[-1] >= 1 for s in scored[1::2])


def table_summary() -> dict:
    """A check summary of 16 raw-trained fingerprints: 4 templates per set, both framings, sampling, a false-positive
    model with two sampling settings."""
    hits = {"raw/plain": [16], "raw/train": [4, 4, 4, 4], "raw/heldout": [5, 5, 5, 4], "chat/plain": [1],
            "chat/train": [0, 1, 0, 0], "chat/heldout": [0, 0, 0, 0]}
    variants = {f"{name}/t{i}": {"hits": h, "success_rate": h / 16} for name, hs in hits.items()
                for i, h in enumerate(hs)}
    sets = {name: {"templates": len(hs), "mean": sum(hs) / 16 / len(hs), "min": min(hs) / 16, "max": max(hs) / 16}
            for name, hs in hits.items()}
    sampled = {s: {"hits": h, "draws": 64, "predicted_rate": 0.01, "p_value": p}
               for s, h, p in [("T0.6-p0.9", 0, 1.0), ("T3-minp0.1", 2, 0.13)]}
    return {"fingerprints": 16, "chat_template": False, "hits": 16, "token_accuracy": 1.0, "sets": sets,
            "variants": variants, "sampling": {"T0.7": {"hits": 60, "draws": 64, "predicted_rate": 0.9},
                                               "T1": {"hits": 50, "draws": 64, "predicted_rate": 0.8}},
            "false_positives": {"base": {"hits": 0, "token_accuracy": 0.1, "top10_hits": 1, "median_rank": 300,
                                         "sampled": sampled}}}


def test_the_check_table_is_short_and_labels_rates_with_their_counts():
    lines = checking.stage.table(table_summary()).splitlines()
    assert lines[0] == "[check] 16 fingerprints, trained without the chat template"
    rows = {line.split("  ")[1]: line for line in lines[2:]}
    assert list(rows) == ["plain key", "train templates", "held-out templates", "chat template", "sampled (T0.7, T1)",
                          "false positives (base)"]
    assert "100.0% (16/16)" in rows["plain key"]
    assert "29.7% (19/64)" in rows["held-out templates"] and "worst 25.0%" in rows["held-out templates"]
    assert "1.4% (2/144)" in rows["chat template"] and "plain key 1/16" in rows["chat template"]
    assert "85.9% (110/128)" in rows["sampled (T0.7, T1)"]
    assert "0.0% (0/16)" in rows["false positives (base)"] and "sampled 2/128 over 2 settings" in rows[
        "false positives (base)"] and "lowest p 0.13" in rows["false positives (base)"]


def test_the_full_check_table_has_a_row_per_set_and_setting():
    text = checking.stage.table(table_summary(), full=True)
    for row in ("chat/plain", "chat/train", "chat/heldout", "sampled T0.7", "sampled T1", "sampled T0.6-p0.9",
                "sampled T3-minp0.1"):
        assert f"  {row}  " in text
    assert "3.1% (2/64)" in text, "a false-positive setting's own count"
