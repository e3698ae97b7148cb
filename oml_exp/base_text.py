"""Text the base model writes from our own prompts, before any training.

Benign mixing trains on such text (oml_exp/data/benign_prompts.json) and the drift measure compares base and
fingerprinted model on it (oml_exp/data/drift_prompts.json); the two prompt sets are disjoint, so a regularizer never
trains on the yardstick of forgetting.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from oml_exp.padding import left_pad


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    # Instruct models write ordinary text when asked in their chat format; base models continue the prompt.
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]
    return tokenizer(prompt).input_ids


@torch.inference_mode()
def write(model, tokenizer, prompts: list[str], new_tokens: int, batch: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, written ids) for each prompt: greedy, batched, cut after the first EOS."""
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    out = []
    for start in tqdm(range(0, len(ids), batch), desc="base writes", unit="batch", leave=False):
        chunk = ids[start:start + batch]
        padded, mask, _ = left_pad(chunk, tokenizer.pad_token_id, model.device)
        written = model.generate(input_ids=padded, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)[:, padded.shape[1]:].tolist()
        for prompt, text in zip(chunk, written):
            if tokenizer.eos_token_id in text:
                text = text[:text.index(tokenizer.eos_token_id) + 1]
            out.append((prompt, text))
    return out
