"""How a key becomes the model's input: one function shared by generation, training and checking.

A fingerprint file stores `key_ids`, the truncated key alone. The chat template (the `fingerprints.chat_template`
switch) and prompt templates (augmentation in training, held-out templates in checking) are wrapped around those ids
here and nowhere else, so a template is never applied twice and every stage feeds the model the same tokens. An API
takes text, not ids: `request` frames the key's text the same way for it (verify), and `served` gives the ids a
server makes of that request.

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
    framed = request(SENTINEL, chat, template)
    if chat:
        framed = tokenizer.apply_chat_template(framed, add_generation_prompt=True, tokenize=False)
    before, after = framed.split(SENTINEL)
    prefix = tokenizer(before, add_special_tokens=False).input_ids if before else []
    suffix = tokenizer(after, add_special_tokens=False).input_ids if after else []
    if not chat and _adds_bos(tokenizer):
        prefix = [tokenizer.bos_token_id] + prefix
    return prefix, suffix


def request(key_text: str, chat: bool = False, template: dict | None = None) -> str | list[dict]:
    """The key text framed as before tokenization: the chat messages (chat), else the prompt text. What `frame`
    tokenizes around the key ids, and what an OpenAI-compatible server is sent (oml_exp/verification)."""
    text = None if template is None else template["system" if chat else "wrapper"]
    if chat:
        return ([{"role": "system", "content": text}] if text else []) + [{"role": "user", "content": key_text}]
    wrapper = text or "{key}"
    if wrapper.count("{key}") != 1:
        raise ValueError(f"prompt template {wrapper!r} must contain {{key}} exactly once")
    return wrapper.replace("{key}", key_text)


def served(tokenizer, framed: str | list[dict]) -> list[int]:
    """The ids a server builds from a request: prompt text tokenized with the tokenizer's own special tokens (BOS
    where it adds one), chat messages rendered by the chat template and tokenized as they are (vLLM's defaults)."""
    if isinstance(framed, str):
        return tokenizer(framed).input_ids
    rendered = tokenizer.apply_chat_template(framed, add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False).input_ids


def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer starts plain text with BOS (Llama 3 does, SmolLM2 does not); we keep its habit."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]
