"""Regularizers across two processes (gloo): each rank averages only its own partition of the ZeRO-2 master copy."""

from __future__ import annotations

import json

from tests.train_helpers import EQUIVALENCE_ATOL, assert_same_weights, fake_fingerprints, launch, make_config, train

SETTINGS = ("train.epochs=3", "train.early_stop_loss=0", "train.lr=1e-3", "regularizer=[averaging,distance]",
            "regularizer.averaging.strength=0.5")


def test_two_zero2_processes_average_and_penalize_like_one_torch_process(tmp_path):
    gen = fake_fingerprints(tmp_path / "gen", make_config(*SETTINGS))
    train(make_config(*SETTINGS), gen, tmp_path / "one")
    launch("torchrun", tmp_path / "two", gen, *SETTINGS, "engine=deepspeed_zero2")
    logged = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3] and logged[-1]["distance_penalty"] > 0
    assert_same_weights(tmp_path / "one", tmp_path / "two", atol=EQUIVALENCE_ATOL)
