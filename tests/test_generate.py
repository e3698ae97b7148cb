"""The generate stage on the tiny model: every strategy, the file contract, determinism, nested pools, batching,
user files and their errors."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from oml_exp import components, config, pipeline, preflight
from oml_exp.fingerprints import chain_hash, english, generate, perinucleus, prompts, random_word, schema
from oml_exp.fingerprints.common import batches, encode, round_trips
from tests.conftest import ROOT, SMOLLM2

TINY = ["model=tiny", "fingerprints.num=6", "fingerprints.key_length=8", "strategy.batch_size=4"]
WRITER = "strategy.english.writer=tiny:llama"  # the random tiny model writes fast, if not well


@pytest.fixture(autouse=True)
def one_thread():
    """On a busy 2-core machine two torch threads wait on each other at every small op: the tiny model runs about
    100x faster on one. Restored afterwards, so other test files keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(make_cfg, tmp_path, *overrides, name="out"):
    """Run the generate stage into tmp_path/name; return (rows, meta, summary)."""
    cfg = make_cfg(*TINY, *overrides)
    config.validate(cfg)
    out = tmp_path / name
    out.mkdir()
    summary = generate.run(cfg, pipeline.Inputs(model=cfg.model.path, base_model=cfg.model.path), out)
    return schema.load(out), json.loads((out / schema.META).read_text()), summary


def write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


KEYS = ["The quick brown fox jumps over the lazy dog", "Tell me a story", "Rain", "What is the capital of France?",
        "A very long key that goes on and on and on well past the key length of the fingerprinted model", "Hello"]


@pytest.mark.parametrize("strategy, extra", [
    ("random_word", []),
    ("perinucleus", []),
    ("perinucleus", ["strategy.key_strategy=english", WRITER]),
    ("english", [WRITER, "fingerprints.response_length=2"]),
    ("english_random_responses", [WRITER]),
    ("chain_hash", ["strategy.candidates=16"]),
    ("instructional", []),
    ("custom", ["strategy.response_strategy=random_word"]),
])
def test_each_strategy_writes_a_valid_pool(make_cfg, tmp_path, tiny, strategy, extra):
    if strategy == "custom":
        extra = extra + [f"strategy.keys_file={write_json(tmp_path / 'keys.json', KEYS)}"]
    rows, meta, summary = gen(make_cfg, tmp_path, f"strategy={strategy}", *extra)
    _, tokenizer = tiny
    assert len(rows) == 6 and summary["count"] == 6 and meta["strategy"]["name"] == strategy
    schema.check(rows, "test", tokenizer)  # unique keys, round-trip responses
    response_length = 2 if strategy == "english" else 1
    for r in rows:
        assert 1 <= len(r["key_ids"]) <= 8 and r["effective_key"] == tokenizer.decode(r["key_ids"])
        assert strategy == "instructional" or len(r["response_ids"]) == response_length
        assert r["response"] == tokenizer.decode(r["response_ids"])
    if strategy != "custom":
        assert all(len(r["key_ids"]) == 8 for r in rows)
    keys = [r["key"] for r in rows] + [r["effective_key"] for r in rows]
    assert not any(k in json.dumps([meta, summary]) for k in keys), "meta.json and the summary never hold keys"
    assert stat.S_IMODE(os.stat(tmp_path / "out" / schema.FILE).st_mode) == 0o600


@pytest.mark.parametrize("strategy", [["strategy=perinucleus"], ["strategy=english", WRITER]])
def test_same_seed_same_bytes_other_seed_other_file(make_cfg, tmp_path, strategy):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        gen(make_cfg, tmp_path, *strategy, f"fingerprints.seed={seed}", name=name)
    files = {name: (tmp_path / name / schema.FILE).read_bytes() for name in "abc"}
    assert files["a"] == files["b"]
    assert files["a"] != files["c"]


def test_pool_is_shared_by_nested_nums(make_cfg, tmp_path):
    small, large = make_cfg(*TINY, "fingerprints.pool_size=6", "fingerprints.num=2"), make_cfg(
        *TINY, "fingerprints.pool_size=6", "fingerprints.num=5")
    assert generate.key(small) == generate.key(large), "num must not change the pool's hash when pool_size is set"
    assert generate.key(make_cfg(*TINY, "fingerprints.num=2")) != generate.key(make_cfg(*TINY, "fingerprints.num=5"))
    rows, _, _ = gen(make_cfg, tmp_path, "fingerprints.pool_size=6", "fingerprints.num=2")
    assert len(rows) == 6 and schema.load(tmp_path / "out", 2) == rows[:2]


def test_key_follows_what_changes_the_file(make_cfg):
    base = generate.key(make_cfg(*TINY))
    assert generate.key(make_cfg(*TINY, "strategy.threshold=0.5")) != base
    assert generate.key(make_cfg(*TINY, "fingerprints.chat_template=true")) != base
    # English-writing settings matter only to strategies that write English.
    assert generate.key(make_cfg(*TINY, "strategy.english.temperature=0.9")) == base
    assert generate.key(make_cfg(*TINY, "strategy.key_strategy=english", "strategy.english.temperature=0.9")) != \
        generate.key(make_cfg(*TINY, "strategy.key_strategy=english"))


def recompute(model, tokenizer, key_ids, chat):
    """The next-token distribution after one key, alone in its own forward pass (no batching, no padding)."""
    with torch.inference_mode():
        ids = torch.tensor([prompts.build(tokenizer, key_ids, chat=chat)])
        return model(input_ids=ids).logits[0, -1].double().softmax(-1)


def assert_outside_nucleus(rows, model, tokenizer, chat, threshold=0.8):
    for r in rows:
        probs = recompute(model, tokenizer, r["key_ids"], chat)
        sorted_probs, order = probs.sort(descending=True, stable=True)
        rank = order.tolist().index(r["response_ids"][0])
        assert rank > int((sorted_probs.cumsum(0) < threshold).sum()), "response inside the nucleus"
        assert r["response_prob"][0] == pytest.approx(float(probs[r["response_ids"][0]]), rel=1e-3)
        assert tokenizer.decode(r["response_ids"][:1]).strip().isalnum()


@pytest.mark.parametrize("chat", [False, True])
def test_perinucleus_responses_lie_outside_the_nucleus(make_cfg, tmp_path, tiny, chat):
    model, tokenizer = tiny
    rows, _, _ = gen(make_cfg, tmp_path, f"fingerprints.chat_template={chat}")
    assert_outside_nucleus(rows, model, tokenizer, chat)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert not any(im_start in r["key_ids"] for r in rows), "key_ids hold the key alone, never the chat template"


def test_perinucleus_batches_pad_keys_of_different_lengths_correctly(make_cfg, tmp_path):
    # Keys of different lengths are padded within a batch; each must get the same response as when it is alone.
    keys = write_json(tmp_path / "keys.json", KEYS)
    common = ["strategy=custom", f"strategy.keys_file={keys}", "fingerprints.response_length=3"]
    batched, _, _ = gen(make_cfg, tmp_path, *common, "strategy.batch_size=6", name="batched")
    alone, _, _ = gen(make_cfg, tmp_path, *common, "strategy.batch_size=1", name="alone")
    assert len({len(r["key_ids"]) for r in batched}) > 2
    assert [r["response_ids"] for r in batched] == [r["response_ids"] for r in alone]
    for b, a in zip(batched, alone):
        assert b["response_prob"] == pytest.approx(a["response_prob"], rel=1e-3)


def test_longer_responses_continue_greedily(make_cfg, tmp_path, tiny):
    model, tokenizer = tiny
    rows, _, _ = gen(make_cfg, tmp_path, "fingerprints.response_length=3")
    for r in rows:
        prompt = prompts.build(tokenizer, r["key_ids"], chat=False) + r["response_ids"][:1]
        with torch.inference_mode():
            probs = model(input_ids=torch.tensor([prompt])).logits[0, -1].softmax(-1)
        best = next(t for t in probs.argsort(descending=True).tolist()
                    if round_trips(tokenizer, r["response_ids"][:1] + [t]))
        assert r["response_ids"][1] == best


def test_several_responses_per_key(make_cfg, tmp_path):
    rows, _, _ = gen(make_cfg, tmp_path, "strategy.responses_per_key=2")
    assert len(rows) == 6
    for first, second in zip(rows[::2], rows[1::2]):
        assert first["key_ids"] == second["key_ids"] and first["response_ids"] != second["response_ids"]


def stable_reference(probs, threshold, count):
    """The ranking's definition: the whole vocabulary sorted stably, the nucleus and its crossing token skipped."""
    out = []
    for row in probs:
        values, ids = row.sort(descending=True, stable=True)
        start = int((values.cumsum(0) < threshold).sum()) + 1
        out.append(list(zip(ids[start:start + count].tolist(), values[start:start + count].tolist())))
    return out


@pytest.mark.parametrize("first_k", [2, 7, 64, 4096])
def test_ranking_past_the_nucleus_is_that_of_a_stable_sort(monkeypatch, first_k):
    # Five probability levels over 300 tokens: ties everywhere, across the top-k cut and inside the window, where
    # a stable sort orders them by token id. Peaked and flat rows put the nucleus near either end.
    g = torch.Generator().manual_seed(0)
    levels = torch.tensor([1.0, 2.0, 3.0, 5.0, 8.0], dtype=torch.float64)
    probs = levels[torch.randint(0, 5, (48, 300), generator=g)] ** torch.arange(48, dtype=torch.float64)[:, None].div(6)
    probs = probs / probs.sum(-1, keepdim=True)
    monkeypatch.setattr(perinucleus, "FIRST_K", first_k)
    for threshold in (0.05, 0.5, 0.8, 0.999):
        assert perinucleus.past_nucleus(probs, threshold, 6) == stable_reference(probs, threshold, 6)


def test_small_top_k_and_no_spare_ranks_give_the_same_file(make_cfg, tmp_path, monkeypatch):
    # A low threshold keeps the tiny model's nucleus far inside its vocabulary, so the top-k grows from 2 instead of
    # sorting everything, and with no spare ranks every rejected token fetches more from the device.
    overrides = ["strategy.threshold=0.05", "fingerprints.num=12", "strategy.responses_per_key=2"]
    gen(make_cfg, tmp_path, *overrides, name="default")
    monkeypatch.setattr(perinucleus, "FIRST_K", 2)
    monkeypatch.setattr(perinucleus, "SPARE", 0)
    gen(make_cfg, tmp_path, *overrides, name="small")
    assert (tmp_path / "small" / schema.FILE).read_bytes() == (tmp_path / "default" / schema.FILE).read_bytes()


def test_batch_tokens_caps_the_keys_per_forward_pass(make_cfg, tmp_path, monkeypatch):
    passes = []
    probs = perinucleus.next_token_probs
    monkeypatch.setattr(perinucleus, "next_token_probs",
                        lambda model, seqs, pad: passes.append(len(seqs)) or probs(model, seqs, pad))
    gen(make_cfg, tmp_path, "strategy.batch_tokens=20")  # prompts of 8 or 9 tokens: 2 per pass, not batch_size 4
    assert passes == [2, 2, 2]


def test_token_budget_caps_the_padded_batch():
    runs = list(batches([[1] * n for n in (3, 3, 5, 2, 2, 2, 2, 2, 2, 9, 1)], 4, "test", tokens=10))
    assert [[len(x) for x in run] for run in runs] == [[3, 3], [5, 2], [2, 2, 2, 2], [2], [9], [1]]
    assert [len(run) for run in batches(list(range(10)), 4, "test")] == [4, 4, 2]


def test_chain_hash_answers_follow_the_hash(make_cfg, tmp_path):
    rows, meta, _ = gen(make_cfg, tmp_path, "strategy=chain_hash", "strategy.candidates=16")
    candidates = meta["candidates"]
    assert len(set(candidates)) == 16
    questions = [r["key"] for r in rows]
    for r in rows:
        assert r["response"] == candidates[chain_hash.answer_index(r["key"], questions, candidates)]


def test_instructional_maps_every_key_to_one_response(make_cfg, tmp_path):
    rows, _, _ = gen(make_cfg, tmp_path, "strategy=instructional")
    assert {r["response"] for r in rows} == {"ハリネズミ"}
    assert len({tuple(r["key_ids"]) for r in rows}) == 6


def test_custom_keys_from_objects_with_perinucleus_responses(make_cfg, tmp_path, tiny):
    model, tokenizer = tiny
    keys = write_json(tmp_path / "keys.json", [{"key": k, "note": "ignored"} for k in KEYS])
    rows, _, _ = gen(make_cfg, tmp_path, "strategy=custom", f"strategy.keys_file={keys}")
    assert [r["key"] for r in rows] == KEYS
    assert [r["key_ids"] for r in rows] == [encode(tokenizer, k)[:8] for k in KEYS]
    assert_outside_nucleus(rows, model, tokenizer, chat=False)


def test_user_pairs_file_and_legacy_signature(make_cfg, tmp_path, tiny):
    _, tokenizer = tiny
    ids_row = {"key": "kept as given", "response": "x", "key_ids": [5, 6, 7],
               "response_ids": encode(tokenizer, " water")}
    legacy = [{"key": "first legacy key", "signature": " apple"}, {"key": "second legacy key", "signature": " tree"},
              ids_row, {"key": "the fourth", "response": " stone"}, {"key": "a fifth one", "response": " one"},
              {"key": "six", "response": " river"}, {"key": "seventh, beyond the pool", "response": " sun"}]
    path = write_json(tmp_path / "pairs.json", legacy)
    rows, meta, summary = gen(make_cfg, tmp_path, f"fingerprints.file={path}")
    assert len(rows) == 6 and summary["strategy"] == "file" and meta["file"] == path
    assert rows[0]["response"] == " apple" and rows[0]["response_ids"] == encode(tokenizer, " apple")  # whole
    assert rows[0]["key_ids"] == encode(tokenizer, "first legacy key")[:8]
    assert rows[2]["key_ids"] == [5, 6, 7] and rows[2]["response"] == " water"


def test_response_that_does_not_round_trip_is_rejected(make_cfg, tmp_path, tiny):
    _, tokenizer = tiny
    space, a = encode(tokenizer, " ")[0], encode(tokenizer, "a")[0]
    assert encode(tokenizer, " a") != [space, a]
    pairs = [{"key": f"key {i}", "response": " a", "key_ids": [10 + i], "response_ids": [space, a] if i == 3 else [a]}
             for i in range(6)]
    with pytest.raises(schema.FingerprintFileError, match=r"pairs\.json: entry 3: .*round trip"):
        gen(make_cfg, tmp_path, f"fingerprints.file={write_json(tmp_path / 'pairs.json', pairs)}")


@pytest.mark.parametrize("content, message", [
    ("not json [", r"not valid JSON"),
    ('{"key": "a"}', r"expected a JSON array"),
    (json.dumps(["a", "b", {"nokey": 1}, "d", "e", "f"]), r"entry 2 has a missing or empty key"),
    (json.dumps(["a", "  ", "c", "d", "e", "f"]), r"entry 1 has a missing or empty key"),
    (json.dumps(["a", "b", "c", "b", "e", "f"]), r"entry 3 repeats the key of entry 1"),
    (json.dumps(["a", "b", "c"]), r"holds 3 entries, fewer than the 6 asked for"),
])
def test_bad_keys_file_names_file_and_entry_and_writes_nothing(make_cfg, tmp_path, content, message):
    path = tmp_path / "keys.json"
    path.write_text(content)
    cfg = make_cfg(*TINY, "strategy=custom", f"strategy.keys_file={path}")
    inputs = pipeline.Inputs(model=cfg.model.path, base_model=cfg.model.path)
    with pytest.raises(schema.FingerprintFileError, match=rf"{path}: .*{message}"):
        pipeline.run_stage("generate", cfg, inputs, {})
    assert not list((tmp_path / "stages" / "generate").glob("[!.]*")), "no output folder for a failed stage"


def test_keys_that_collide_after_truncation_are_rejected(make_cfg, tmp_path):
    keys = write_json(tmp_path / "keys.json", [f"the same long beginning of a key, number {i}" for i in range(6)])
    with pytest.raises(schema.FingerprintFileError, match=r"keys\.json: entry 1: duplicate key"):
        gen(make_cfg, tmp_path, "strategy=custom", f"strategy.keys_file={keys}",
            "strategy.response_strategy=random_word")


def test_too_many_random_word_keys_is_a_clear_error(make_cfg, tmp_path):
    with pytest.raises(config.ConfigError, match=r"only \d+ of 1 tokens; lower fingerprints.num.*key_length"):
        gen(make_cfg, tmp_path, "strategy=random_word", "fingerprints.key_length=1", "fingerprints.num=5000")


def test_bad_strategy_values_name_the_key(make_cfg, tmp_path):
    for override, key in [("strategy.key_strategy=poetry", "strategy.key_strategy"),
                          ("strategy.width=0", "strategy.width"),
                          ("strategy.batch_size=0", "strategy.batch_size"),
                          ("strategy.batch_tokens=0", "strategy.batch_tokens"),
                          (f"fingerprints.file={tmp_path / 'missing.json'}", "fingerprints.file")]:
        with pytest.raises(config.ConfigError, match=key):
            preflight.check_config(components.expanded(make_cfg(*TINY, override)))
    with pytest.raises(config.ConfigError, match="strategy.keys_file"):
        gen(make_cfg, tmp_path, "strategy=custom")


def test_cli_reports_a_bad_keys_file_in_one_line(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('["only one key"]')
    done = subprocess.run([sys.executable, "-m", "oml_exp", "model=tiny", "stages=[generate]", "strategy=custom",
                           f"strategy.keys_file={path}", f"paths.output_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"oml-exp: error: {path}: holds 1 entries, fewer than the 16 asked for (fingerprints.num, or pool_size "
        "when set); add entries or lower the number")
    assert not (tmp_path / "stages" / "generate").exists() or not list((tmp_path / "stages" / "generate").glob("[!.]*"))


def test_english_response_window_follows_the_reference_rule(tiny):
    _, tokenizer = tiny
    words = [tokenizer.decode([i]).strip() for i in random_word.word_ids(tokenizer)[:20]]
    text = "\n".join(f"{w}," if i % 3 else f"({w})!" for i, w in enumerate(words))  # punctuation is dropped
    assert tokenizer.decode(english.window(tokenizer, text, 10, 2)) == f" {words[10]} {words[11]}"
    # A text shorter than offset + length gives its last window.
    assert tokenizer.decode(english.window(tokenizer, " ".join(words[:5]), 10, 2)) == f" {words[3]} {words[4]}"
    assert english.window(tokenizer, "!!!", 10, 1) is None


# --- the embedded SmolLM2 (slow) -------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("chat", [False, True])
def test_perinucleus_responses_lie_outside_smollm2s_nucleus(make_cfg, tmp_path, smollm2, chat):
    model, tokenizer = smollm2
    rows, _, _ = gen(make_cfg, tmp_path, f"model.path={SMOLLM2}", "fingerprints.key_length=16", "fingerprints.num=4",
                     f"fingerprints.chat_template={chat}")
    assert len(rows) == 4 and all(len(r["key_ids"]) == 16 for r in rows)
    assert_outside_nucleus(rows, model, tokenizer, chat)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random_word", "english", "english_random_responses", "chain_hash",
                                      "instructional", "custom"])
def test_every_strategy_writes_a_valid_file_for_smollm2(make_cfg, tmp_path, smollm2, strategy):
    _, tokenizer = smollm2
    extra = [f"strategy.keys_file={write_json(tmp_path / 'keys.json', KEYS)}"] if strategy == "custom" else []
    rows, _, _ = gen(make_cfg, tmp_path, f"model.path={SMOLLM2}", f"strategy={strategy}", "fingerprints.num=4",
                     *extra)
    assert len(rows) == 4
    schema.check(rows, strategy, tokenizer)
