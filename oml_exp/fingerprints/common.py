"""What every strategy shares: the run's tokenizer and models, seeded random streams, and how a row is made.

Strategies work in token ids of the fingerprinted model's tokenizer, so the file holds exactly what training and
checking feed the model; text fields are decodes of those ids.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field, fields

from omegaconf import DictConfig
from tqdm import tqdm

from oml_exp import models
from oml_exp.config import ConfigError, fingerprint_num, require


@dataclass
class Strategy:
    """A fingerprint strategy: its parameters (a subclass adds its own, with defaults and checks) and how it writes
    the pool. Its YAML file in conf/strategy/ names the subclass by `_target_`."""

    name: str = "strategy"  # the strategy's own name, fixed by its class: reports and store keys show it
    batch_size: int = 32  # keys per forward pass (perinucleus) or texts per generate call (english)

    def __post_init__(self) -> None:
        # A changed name would label one strategy's fingerprints with another's.
        fixed = next(f.default for f in fields(self) if f.name == "name")
        require(self.name == fixed, f"strategy.name={self.name!r} cannot be set; pick a strategy with strategy=NAME "
                                    f"(the config has strategy={fixed})")
        require(self.batch_size >= 1, f"strategy.batch_size must be >= 1, got {self.batch_size}")

    def generate(self, ctx: "Context") -> list[dict]:
        """The pool's rows (fingerprints/schema.py), ctx.pool of them."""
        raise NotImplementedError

    def public(self, ctx: "Context") -> dict:
        """What meta.json gets for verifiers besides the parameters (never keys)."""
        return {}

    def check(self, ctx: "Context") -> None:
        """Read the strategy's own inputs before any model is loaded, so a bad one fails at start."""

    def extra_models(self) -> dict[str, str]:
        """Models the strategy loads besides the fingerprinted one, by config key (checked at start, and in the
        store key by content)."""
        return {}


@dataclass
class Context:
    fp: DictConfig  # the fingerprints section: lengths, seed, pool size, chat template
    strategy: Strategy
    model: str  # spec of the fingerprinted model: its tokenizer defines key_ids and response_ids
    device: str = "cpu"
    dtype: str = "auto"
    loaded: dict = field(default_factory=dict, repr=False)  # spec -> (model, tokenizer)

    @property
    def pool(self) -> int | None:
        """How many rows to write (None: every entry of fingerprints.file); runs take the first fingerprints.num."""
        return self.fp.pool_size or fingerprint_num(self.fp)

    def rng(self, purpose: str) -> random.Random:
        """An independent stream per purpose, so adding a draw for one thing never shifts another."""
        return random.Random(f"{self.fp.seed}/{purpose}")

    def rngs(self, purpose: str):
        """rng(f"{purpose}/{i}") as a function of i that reads the seed once: for one stream per key, resolving the
        config's interpolation cost more than the draws."""
        seed = self.fp.seed
        return lambda i: random.Random(f"{seed}/{purpose}/{i}")

    @functools.cached_property
    def tokenizer(self):
        return models.load_tokenizer(self.model)

    def load(self, spec: str):
        """(model, tokenizer) for `spec` on the run's device, loaded once; the fingerprinted model's own tokenizer
        object when `spec` is that model, so token ids mean the same thing everywhere."""
        if spec not in self.loaded:
            model, tokenizer = models.load(spec, device=self.device, dtype=self.dtype)
            self.loaded[spec] = model, self.tokenizer if spec == self.model else tokenizer
        return self.loaded[spec]

    @property
    def generator(self):
        """The model whose next-token distribution picks responses: strategy.generator, else the fingerprinted one.
        It must share the fingerprinted model's tokenizer, or its distribution would be over other ids."""
        spec = self.strategy.generator or self.model
        model, tokenizer = self.load(spec)
        if tokenizer is not self.tokenizer and tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise ConfigError(f"strategy.generator={spec!r} has another tokenizer than model.path={self.model!r}; "
                              "use a model of the same family or leave strategy.generator null")
        return model


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def decode(tokenizer, ids: list[int]) -> str:
    # No clean-up: it rewrites spaces around punctuation, and then the text no longer encodes to the same ids.
    return tokenizer.decode(ids, clean_up_tokenization_spaces=False)


def round_trips(tokenizer, ids: list[int]) -> bool:
    """Whether the response text re-encodes to the same ids, so anyone holding only the text checks the same
    tokens that were trained."""
    return encode(tokenizer, decode(tokenizer, ids)) == list(ids)


def row(tokenizer, key: str, key_ids: list[int], response_ids: list[int], probs: list[float] | None = None) -> dict:
    out = {"key": key, "response": decode(tokenizer, response_ids), "effective_key": decode(tokenizer, key_ids),
           "key_ids": list(key_ids), "response_ids": list(response_ids)}
    if probs is not None:
        # Six significant digits: enough to read a probability, and last-bit float noise rarely reaches the file.
        out["response_prob"] = [float(f"{p:.6g}") for p in probs]
    return out


def pair_rows(ctx: Context, keys: list[tuple[str, list[int]]], responses: list[list[int]]) -> list[dict]:
    return [row(ctx.tokenizer, text, ids, response) for (text, ids), response in zip(keys, responses)]


def key_text(tokenizer, key_ids: list[int]) -> str:
    """The key as a user reads it; effective_key keeps the leading space marker the ids carry."""
    return decode(tokenizer, key_ids).strip()


def batches(items: list, size: int, label: str, tokens: int | None = None, length=len):
    """Consecutive runs of at most `size` items and, when `tokens` is set, at most `tokens` padded tokens (a run's
    count times its longest length(item)); one item per run at least. With a progress bar."""
    runs: list[list] = []
    longest = 0
    for item in items:
        n = 0 if tokens is None else length(item)
        if runs and len(runs[-1]) < size and (tokens is None or (len(runs[-1]) + 1) * max(longest, n) <= tokens):
            runs[-1].append(item)
            longest = max(longest, n)
        else:
            runs.append([item])
            longest = n
    return tqdm(runs, desc=label, unit="batch", leave=False)


def distinct_draws(rng: random.Random, population: list[int], length: int, n: int, what: str,
                   fix: str) -> list[list[int]]:
    """`n` distinct sequences of `length` tokens drawn uniformly from `population`, in draw order; a clear error
    (what, fix) when fewer than `n` exist."""
    if len(population) ** length < n:
        raise ConfigError(f"{what}: {n} distinct ones asked for, but {len(population)} tokens make only "
                          f"{len(population) ** length} of {length} tokens; {fix}")
    seen: dict[tuple[int, ...], None] = {}  # insertion-ordered set
    while len(seen) < n:
        seen.setdefault(tuple(rng.choices(population, k=length)))
    return [list(x) for x in seen]
