"""How a key becomes the model's input: one function shared by generation, training and checking.

A fingerprint file stores `key_ids`, the truncated key alone. The chat template (the `fingerprints.chat_template`
switch) and prompt templates (augmentation in training, held-out templates in checking) are wrapped around those ids
here and nowhere else, so a template is never applied twice and every stage feeds the model the same tokens.

A prompt template is a dict with a `category` and:
  wrapper  text with one `{key}`, used when the chat template is off ("Answer as a pirate would: {key}")
  system   a system prompt, used when the chat template is on
"""

from __future__ import annotations

SENTINEL = "\u2063KEY\u2063"  # an invisible separator that no template or chat format contains


def build(tokenizer, key_ids: list[int], chat: bool = False, template: dict | None = None) -> list[int]:
    """Token ids of the prompt that ends where the response starts."""
    prefix, suffix = frame(tokenizer, chat, template)
    return prefix + list(key_ids) + suffix


def frame(tokenizer, chat: bool = False, template: dict | None = None) -> tuple[list[int], list[int]]:
    """The ids that go before and after the key ids; compute once per template when looping over many keys."""
    text = None if template is None else template["system" if chat else "wrapper"]
    if chat:
        messages = ([{"role": "system", "content": text}] if text else []) + [{"role": "user", "content": SENTINEL}]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        before, after = rendered.split(SENTINEL)
    else:
        wrapper = text or "{key}"
        if wrapper.count("{key}") != 1:
            raise ValueError(f"prompt template {wrapper!r} must contain {{key}} exactly once")
        before, after = wrapper.split("{key}")
    prefix = tokenizer(before, add_special_tokens=False).input_ids if before else []
    suffix = tokenizer(after, add_special_tokens=False).input_ids if after else []
    if not chat and _adds_bos(tokenizer):
        prefix = [tokenizer.bos_token_id] + prefix
    return prefix, suffix


def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer starts plain text with BOS (Llama 3 does, SmolLM2 does not); we keep its habit."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]
