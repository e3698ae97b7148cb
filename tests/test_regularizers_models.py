"""The regularizers that choose which weights train, on the tiny model: sub-network and LoRA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from oml_exp import models
from oml_exp.training.regularizers import lora
from tests.train_helpers import QUICK, base_weights, fake_fingerprints, make_config, saved_weights, train


# --- sub-network -----------------------------------------------------------------------------------------------------

def test_subnetwork_trains_new_units_only_and_saves_a_plain_model(tmp_path):
    cfg = make_config(*QUICK, "regularizer=subnetwork", "regularizer.subnetwork.fraction=0.25")
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ft" / "model")  # plain transformers, no custom code
    base, width = base_weights(), 128
    assert model.config.intermediate_size == width + 32
    saved = model.state_dict()
    assert saved.keys() == base.keys()
    new_units_moved = False
    for name, original in base.items():
        w = saved[name]
        if w.shape == original.shape:
            assert torch.equal(w, original), name
            continue
        old, new = (w[:width], w[width:]) if "down_proj" not in name else (w[:, :width], w[:, width:])
        assert torch.equal(old, original), name  # bitwise
        new_units_moved |= "down_proj" in name and new.abs().max().item() > 0  # starts at zero
    assert new_units_moved


def test_subnetwork_can_train_chosen_layers_only(tmp_path):
    cfg = make_config(*QUICK, "regularizer=subnetwork", "regularizer.subnetwork.fraction=0",
                      "regularizer.subnetwork.layers=[1]")
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    base, saved = base_weights(), saved_weights(tmp_path / "ft")
    changed = {k for k in base if not torch.equal(base[k], saved[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)


# --- LoRA ------------------------------------------------------------------------------------------------------------

def test_lora_merged_model_without_peft_gives_the_adapter_models_logits(tmp_path, monkeypatch):
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    adapter_logits = []
    merge = lora.merge

    def watched(model):
        with torch.no_grad():
            adapter_logits.append(model(input_ids=ids).logits)
        merge(model)

    monkeypatch.setattr(lora, "merge", watched)
    cfg = make_config(*QUICK, "regularizer=lora", "regularizer.lora.rank=4", "regularizer.lora.alpha=8")
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    folder = tmp_path / "ft" / "model"
    assert not (folder / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(folder)
    assert saved_weights(tmp_path / "ft").keys() == base_weights().keys()
    with torch.no_grad():
        logits = merged(input_ids=ids).logits
    assert torch.allclose(logits, adapter_logits[0], atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(models.resolve("tiny:llama"))
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, logits, atol=1e-4)  # the adapters did train


# --- under DeepSpeed -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("regularizer", ["subnetwork", "lora"])
def test_zero2_saves_the_same_plain_model_as_torch(tmp_path, regularizer):
    settings = ("train.epochs=2", "train.early_stop_loss=0", "train.lr=1e-3", f"regularizer={regularizer}")
    gen = fake_fingerprints(tmp_path / "gen", make_config(*settings))
    for engine in ("torch", "deepspeed_zero2"):
        train(make_config(*settings, f"engine={engine}"), gen, tmp_path / engine)
    one, other = saved_weights(tmp_path / "torch"), saved_weights(tmp_path / "deepspeed_zero2")
    assert one.keys() == other.keys() == base_weights().keys()
    assert max((one[k] - other[k]).abs().max().item() for k in one) <= 1e-5
