"""Fingerprints and models made up for the check and evaluate tests, independent of the generate and finetune stages."""

from __future__ import annotations

from pathlib import Path

import torch

from oml_exp.fingerprints import prompts, schema


def greedy_response(model, tokenizer, key_ids: list[int], length: int, chat: bool = False) -> list[int]:
    prompt = prompts.build(tokenizer, key_ids, chat)
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=length, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    return out[0, len(prompt):].tolist()


def fabricate(model, tokenizer, n: int, response_length: int, key_lengths=(16,), seed: int = 0, chat: bool = False,
              as_text: bool = False) -> list[dict]:
    """Fingerprints whose even-numbered responses are what the model already says greedily (hits) and whose odd ones
    have their last token changed (misses); keys are random token ids of the given lengths, cycled, or with
    `as_text` the ids their text tokenizes to (what a server asked with the text sees). `chat`: framed as chat."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        key = torch.randint(10, len(tokenizer) - 10, (key_lengths[i % len(key_lengths)],), generator=g).tolist()
        if as_text:
            key = tokenizer(tokenizer.decode(key), add_special_tokens=False).input_ids
        response = greedy_response(model, tokenizer, key, response_length, chat)
        if i % 2:
            response[-1] = (response[-1] + 1) % len(tokenizer)
        text = tokenizer.decode(key)
        rows.append({"key": text, "response": tokenizer.decode(response), "effective_key": text, "key_ids": key,
                     "response_ids": response})
    return rows


def save(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    schema.save(folder, rows, {"strategy": "test"})
    return folder


def perturbed_copy(model, tokenizer, folder: Path, scale: float = 0.5, seed: int = 1) -> str:
    """Save a copy of the model with noise on every weight: a model with the same tokenizer that was never trained
    on the fabricated fingerprints."""
    import copy

    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.std())
    other.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
