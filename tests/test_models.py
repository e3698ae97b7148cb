import pytest
import torch

from oml_exp import models


@pytest.mark.parametrize("arch", models.TINY_ARCHS)
def test_tiny_architectures_load_and_run(arch):
    model, tok = models.load(f"tiny:{arch}", device="cpu")
    assert model.config.model_type == arch
    ids = tok("The quick brown fox", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[-1] >= len(tok) and torch.isfinite(logits).all()
    assert tok.pad_token_id is not None and tok.chat_template


def test_tiny_model_is_deterministic():
    a, _ = models.load("tiny:llama", device="cpu")
    b, _ = models.load("tiny:llama", device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_specs_fail_clearly():
    with pytest.raises(models.ModelError, match="tiny architecture"):
        models.resolve("tiny:gpt5")
    with pytest.raises(models.ModelError, match="embedded model"):
        models.resolve("embedded:nope")
    with pytest.raises(models.ModelError, match="cannot load model.path"):
        models.load("/nonexistent/folder", device="cpu")


def test_dtype_is_fp32_on_cpu_and_bf16_on_gpu():
    assert models.pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert models.pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert models.pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(models.ModelError, match="model.dtype"):
        models.pick_dtype("int3", torch.device("cpu"))


@pytest.mark.slow
def test_embedded_smollm2_loads_as_fp32_llama(smollm2):
    model, tok = smollm2
    assert model.config.model_type == "llama" and model.dtype == torch.float32
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    out = model.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0])
