"""The generate stage on the embedded SmolLM2 (slow): perinucleus responses lie outside the real model's nucleus,
and every strategy writes a valid file for it."""

import pytest

from oml_exp.fingerprints import schema
from tests.conftest import SMOLLM2
from tests.test_generate import KEYS, assert_outside_nucleus, gen, one_thread, write_json  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("chat", [False, True])
def test_perinucleus_responses_lie_outside_the_nucleus(make_cfg, tmp_path, smollm2, chat):
    model, tokenizer = smollm2
    rows, _, _ = gen(make_cfg, tmp_path, f"model.path={SMOLLM2}", "fingerprints.key_length=16", "fingerprints.num=4",
                     f"fingerprints.chat_template={chat}")
    assert len(rows) == 4 and all(len(r["key_ids"]) == 16 for r in rows)
    assert_outside_nucleus(rows, model, tokenizer, chat)


@pytest.mark.parametrize("strategy", ["random_word", "english", "english_random_responses", "chain_hash",
                                      "instructional", "custom"])
def test_every_strategy_writes_a_valid_file(make_cfg, tmp_path, smollm2, strategy):
    _, tokenizer = smollm2
    extra = [f"strategy.keys_file={write_json(tmp_path / 'keys.json', KEYS)}"] if strategy == "custom" else []
    rows, _, _ = gen(make_cfg, tmp_path, f"model.path={SMOLLM2}", f"strategy={strategy}", "fingerprints.num=4",
                     *extra)
    assert len(rows) == 4
    schema.check(rows, strategy, tokenizer)
