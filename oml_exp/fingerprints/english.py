"""english: an instruct model (strategy.english.writer, by default the embedded SmolLM2) writes keys and,
independently, responses, each from a prompt naming a random seed word (the reference's english strategy);
english_random_responses pairs those keys with random-word responses (the paper's weak baseline).

Keys are the written text, trained as its first key_length tokens; responses are cut at generation time by the
reference's fine-tuning rule (letters, digits and spaces; a window of response_length tokens from about the
`offset`-th token on), so the file holds exactly what is trained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from oml_exp.config import ConfigError, require
from oml_exp.fingerprints import random_word
from oml_exp.fingerprints.common import Context, Strategy, batches, decode, encode, pair_rows, round_trips
from oml_exp.padding import left_pad

ROUNDS = 4  # writing rounds to replace texts too short to use or repeating a key


@dataclass
class EnglishText:
    """How an instruct model writes English keys or responses (the reference's english strategy)."""

    writer: str = "embedded:smollm2-135m-instruct"  # any model spec; may differ from the fingerprinted model
    prompt: str = "Generate a paragraph starting with the word - {word}"  # {word}: a random whole word
    temperature: float = 0.5
    margin: int = 8  # new tokens written beyond what the key or the response window needs
    offset: int = 10  # a response is the window of response_length tokens from about this token on

    def __post_init__(self) -> None:
        require(self.temperature > 0, f"strategy.english.temperature must be > 0, got {self.temperature}")
        require(self.prompt.count("{word}") == 1,
                f"strategy.english.prompt must contain {{word}} exactly once, got {self.prompt!r}")
        for name in ("margin", "offset"):
            require(getattr(self, name) >= 0, f"strategy.english.{name} must be >= 0, got {getattr(self, name)}")


def write(ctx: Context, n: int, purpose: str, new_tokens: int) -> list[str]:
    """`n` texts written by the writer model, sampled in batches, seeded by (fingerprints.seed, purpose)."""
    e = ctx.strategy.english
    model, tok = ctx.load(e.writer)
    rng = ctx.rng(f"english/{purpose}")
    words = random_word.word_ids(tok)
    requests = [chat_prompt(tok, e.prompt.format(word=decode(tok, [rng.choice(words)]).strip())) for _ in range(n)]
    texts = []
    for batch in batches(requests, ctx.strategy.batch_size, f"english {purpose}"):
        texts += sample(model, tok, batch, new_tokens, e.temperature, rng.getrandbits(63))
    return texts


def chat_prompt(tokenizer, text: str) -> list[int]:
    if not tokenizer.chat_template:
        return encode(tokenizer, text)
    messages = [{"role": "user", "content": text}]
    return encode(tokenizer, tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


@torch.inference_mode()
def sample(model, tokenizer, prompts: list[list[int]], new_tokens: int, temperature: float, seed: int) -> list[str]:
    ids, mask, _ = left_pad(prompts, tokenizer.pad_token_id, model.device)
    devices = [model.device] if model.device.type == "cuda" else []
    # generate() samples from torch's global generator: fork it, so the seed stays local to this call.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                             temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def collect(ctx: Context, n: int, what: str, new_tokens: int, accept) -> list:
    """Write texts until `n` are accepted: accept(text) returns an item, or None to reject the text."""
    out: list = []
    for round_ in range(ROUNDS):
        out += [x for x in map(accept, write(ctx, n - len(out), f"{what}{round_}", new_tokens)) if x is not None]
        if len(out) >= n:
            return out[:n]
    raise ConfigError(f"english: the writer gave only {len(out)} usable {what} of {n} in {ROUNDS} rounds; raise "
                      "strategy.english.margin or strategy.english.temperature, or lower fingerprints.key_length")


def keys(ctx: Context, n: int) -> list[tuple[str, list[int]]]:
    """`n` (key, key_ids) with distinct key_ids of exactly key_length tokens."""
    seen: set[tuple[int, ...]] = set()

    def accept(text: str):
        text = text.strip()
        ids = encode(ctx.tokenizer, text)[:ctx.fp.key_length]
        if len(ids) < ctx.fp.key_length or tuple(ids) in seen:
            return None
        seen.add(tuple(ids))
        return text, ids

    return collect(ctx, n, "keys", ctx.fp.key_length + ctx.strategy.english.margin, accept)


def window(tokenizer, text: str, offset: int, length: int) -> list[int] | None:
    """The reference's cut: keep letters, digits and spaces, then take `length` tokens from the first start at or
    after `offset` (else the nearest before it) whose ids survive a decode/encode round trip; None if none does."""
    clean = " ".join(re.sub(r"[^A-Za-z0-9 ]", "", " ".join(text.split())).split())
    ids = encode(tokenizer, " " + clean) if clean else []  # the space: a response follows its key mid-sentence
    if len(ids) < length:
        return None
    first = min(offset, len(ids) - length)
    starts = [*range(first, len(ids) - length + 1), *range(first - 1, -1, -1)]
    return next((ids[s:s + length] for s in starts if round_trips(tokenizer, ids[s:s + length])), None)


def responses(ctx: Context, n: int) -> list[list[int]]:
    e, length = ctx.strategy.english, ctx.fp.response_length
    return collect(ctx, n, "responses", e.offset + length + e.margin,
                   lambda text: window(ctx.tokenizer, text, e.offset, length))


@dataclass
class English(Strategy):
    name: str = "english"
    english: EnglishText = field(default_factory=EnglishText)

    def generate(self, ctx: Context) -> list[dict]:
        return pair_rows(ctx, keys(ctx, ctx.pool), responses(ctx, ctx.pool))

    def extra_models(self) -> dict[str, str]:
        return {"strategy.english.writer": self.english.writer}


@dataclass
class EnglishRandomResponses(English):
    name: str = "english_random_responses"

    def generate(self, ctx: Context) -> list[dict]:
        return pair_rows(ctx, keys(ctx, ctx.pool), random_word.responses(ctx, ctx.pool))
