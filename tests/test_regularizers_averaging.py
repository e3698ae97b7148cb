"""Weight averaging on the tiny model: it reaches the optimizer's fp32 master copy under DeepSpeed ZeRO, so every
averaging shapes training and DeepSpeed ends where plain torch does."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from oml_exp import models
from oml_exp.training.regularizers import averaging
from tests.train_helpers import fake_fingerprints, make_config, train

# Three epochs at strength 0.5: the first two averagings shape the steps after them. Averaging only the module
# weights (as the reference does) leaves ZeRO-2 about 7e-4 away from torch here; ours agrees to float noise.
AVERAGED = ("regularizer=averaging", "regularizer.averaging.strength=0.5", "train.epochs=3", "train.early_stop_loss=0",
            "train.lr=1e-3")
ATOL = 1e-4


def weights(folder):
    return AutoModelForCausalLM.from_pretrained(folder / "model").state_dict()


def probe_averaging(monkeypatch, read_master) -> list[float]:
    """After each averaging: the worst gap between the master copy, the expected average and the module weight."""
    gaps = []
    original = averaging.average

    def checked(params, base, strength, optimizer):
        before = {name: read_master(p).clone() for name, p in params.items()}
        original(params, base, strength, optimizer)
        worst = 0.0
        for name, p in params.items():
            master = read_master(p)
            expected = (1 - strength) * before[name] + strength * base[name]
            worst = max(worst, (master - expected).abs().max().item(), (p.detach() - master).abs().max().item())
        assert any(not torch.equal(before[n], base[n]) for n in params)  # training moved the weights before it
        gaps.append(worst)

    monkeypatch.setattr(averaging, "average", checked)
    return gaps


@pytest.mark.parametrize("engine", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_averages_the_master_copy_and_matches_torch(tmp_path, monkeypatch, engine):
    from deepspeed.utils import safe_get_full_fp32_param

    gen = fake_fingerprints(tmp_path / "gen", make_config(*AVERAGED))
    train(make_config(*AVERAGED), gen, tmp_path / "torch")
    gaps = probe_averaging(monkeypatch, safe_get_full_fp32_param)
    summary = train(make_config(*AVERAGED, f"engine={engine}"), gen, tmp_path / engine)
    assert summary["steps"] == 3 and len(gaps) == 3  # one averaging per epoch
    assert max(gaps) < 1e-6, gaps
    torch_w, ds_w = weights(tmp_path / "torch"), weights(tmp_path / engine)
    worst = max((torch_w[k] - ds_w[k]).abs().max().item() for k in torch_w)
    assert worst <= ATOL, f"{engine} differs from torch by up to {worst}"


@pytest.mark.parametrize("recipe, averaged", [
    # 8 fingerprints, batch 4, no accumulation: two optimizer steps per epoch
    (("train.grad_accum=1", "train.fingerprints_per_step=null"), [2, 4]),
    (("train.fingerprints_per_step=2",), [4, 8]),  # four steps per epoch
])
def test_averaging_runs_once_per_epoch_of_steps_and_strength_one_undoes_training(tmp_path, monkeypatch, recipe,
                                                                                 averaged):
    overrides = ("regularizer=averaging", "regularizer.averaging.strength=1.0", *recipe, "train.epochs=2",
                 "train.early_stop_loss=0")
    steps = []
    original = averaging.Callback.on_step_end

    def counted(self, args, state, control, **kwargs):
        before = next(iter(self.params.values())).detach().clone()
        original(self, args, state, control, **kwargs)
        if not torch.equal(before, next(iter(self.params.values()))):
            steps.append(state.global_step)

    monkeypatch.setattr(averaging.Callback, "on_step_end", counted)
    cfg = make_config(*overrides)
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    assert steps == averaged
    base = AutoModelForCausalLM.from_pretrained(models.resolve("tiny:llama")).state_dict()
    assert all(torch.equal(w, base[k]) for k, w in weights(tmp_path / "ft").items())


def test_every_k_steps(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(averaging, "average", lambda *a: calls.append(1))
    cfg = make_config("regularizer=averaging", "regularizer.averaging.every=1", "train.grad_accum=1",
                      "train.fingerprints_per_step=null", "train.epochs=2",
                      "train.early_stop_loss=0")
    train(cfg, fake_fingerprints(tmp_path / "gen", cfg), tmp_path / "ft")
    assert len(calls) == 4
