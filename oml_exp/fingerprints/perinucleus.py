"""perinucleus (inverse nucleus) responses: just outside the generator's top-p nucleus after the key.

For each key, rank the next-token distribution, skip the nucleus of cumulative probability `threshold` and the token
that crosses it, then draw uniformly among the next `width` tokens; a token that is not alphanumeric or does not
survive a decode/encode round trip is dropped and the window widens by one. Responses longer than one token continue
greedily (the most likely token that keeps the response round-trippable). The distribution is taken after the key
as training feeds it: prompts.build, so with fingerprints.chat_template the key sits in the chat template.

Keys are processed in batches (strategy.batch_size keys, and at most strategy.batch_tokens padded tokens), left-padded
with position ids counting real tokens only, so each key's own last position is the batch's last column and every
key sees the positions it would see alone.

The ranking is the stable descending order (equal probabilities by token id), but the vocabulary is never sorted
whole: a batched top-k, grown until it holds each row's nucleus, gives the order up to just past the boundary, and
only a few tokens per key past the boundary leave the model's device.
"""

from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from oml_exp.config import ConfigError, require
from oml_exp.fingerprints import keysource, prompts
from oml_exp.fingerprints.common import Context, batches, decode, round_trips, row
from oml_exp.padding import left_pad

GREEDY_CANDIDATES = 64  # how far down the ranking a greedy continuation looks for a round-trippable token
FIRST_K = 4096  # the top-k tried first for every row; rows whose nucleus is larger retry with GROWTH times more
GROWTH = 8
SPARE = 8  # ranks past the first window sent to the host for rejected tokens; a row that uses them up fetches more


@torch.inference_mode()
def next_token_probs(model, sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """[len(sequences), vocab] float64 probabilities of the token after each sequence, in one forward pass; on the
    model's device."""
    ids, mask, positions = left_pad(sequences, pad_id, model.device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, use_cache=False)
    return out.logits[:, -1].double().softmax(-1)


def ranked(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first k entries of each row's descending order: probabilities and token ids [rows, k] (equal
    probabilities in no particular order), and per row how many of them are certain. top-k keeps an arbitrary part of
    a tie at its k-th value, so entries equal to it are certain only when the whole tie fits."""
    vocab = probs.shape[-1]
    if k >= vocab:
        values, ids = probs.sort(dim=-1, descending=True, stable=True)
        return values, ids, torch.full(probs.shape[:1], vocab, device=probs.device)
    values, ids = probs.topk(k, dim=-1)
    last = values[:, -1:]
    whole = (probs >= last).sum(-1) == k
    return values, ids, torch.where(whole, k, (values > last).sum(-1))


def stably(values: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Descending rows with equal probabilities put in token id order, as a stable sort orders them."""
    ids, by_id = ids.sort(dim=-1)
    values, by_value = values.gather(-1, by_id).sort(dim=-1, descending=True, stable=True)
    return values, ids.gather(-1, by_value)


def past_nucleus(probs: torch.Tensor, threshold: float, count: int) -> list[list[tuple[int, float]]]:
    """Per row, the first `count` (token, probability) of the ranking past the nucleus and its crossing token (fewer
    where the vocabulary ends): top-k over the rows not yet resolved, with k growing until a row's nucleus and the
    `count` ranks after it are certain, the full sort as the last resort."""
    out: list = [None] * len(probs)
    todo, k = torch.arange(len(probs), device=probs.device), FIRST_K
    while len(todo):
        values, ids, certain = ranked(probs if len(todo) == len(probs) else probs[todo], k)
        # The order of equal values changes neither the sorted values nor their cumsum, which runs left to right as
        # over the whole sorted vocabulary.
        start = (values.cumsum(-1) < threshold).sum(-1, keepdim=True) + 1
        done = (start[:, 0] + count <= certain) | (k >= probs.shape[-1])
        # Only a tie that reaches into the window changes which tokens it holds (pairs j-1, j from j = start on).
        j = torch.arange(1, values.shape[-1], device=probs.device)
        tied = ((values[:, 1:] == values[:, :-1]) & (j >= start) & (j <= start + count)).any(-1)
        if k < probs.shape[-1] and bool(tied.any()):
            values[tied], ids[tied] = stably(values[tied], ids[tied])
        at = (start + torch.arange(count, device=probs.device)).clamp(max=values.shape[-1] - 1)
        for i, n, tokens, p in zip(todo[done].tolist(), (values.shape[-1] - start[done, 0]).clamp(0, count).tolist(),
                                   ids.gather(-1, at)[done].tolist(), values.gather(-1, at)[done].tolist()):
            out[i] = list(zip(tokens[:n], p[:n]))
        todo, k = todo[~done], k * GROWTH
    return out


def candidates(probs: torch.Tensor, row: int, threshold: float, head: list[tuple[int, float]], asked: int
               ) -> Iterator[tuple[int, float]]:
    """The ranking past the nucleus of probs[row]: `head` (its first `asked` entries, fewer where the vocabulary
    ends), then more fetched from the device when a row rejects that many tokens."""
    yield from head
    while len(head) == asked:
        seen, asked = asked, asked * GROWTH
        head = past_nucleus(probs[row:row + 1], threshold, asked)[0]
        yield from head[seen:]


def pick(ranking: Iterator[tuple[int, float]], rng: random.Random, threshold: float, width: int, count: int,
         ok) -> list[tuple[int, float]]:
    """`count` distinct (token, probability) drawn from the widening window at the head of `ranking`."""
    window = list(itertools.islice(ranking, width))
    chosen: list = []
    while len(chosen) < count:
        if not window:
            raise ConfigError(f"perinucleus: no acceptable token past the nucleus (strategy.threshold={threshold}); "
                              "lower strategy.threshold")
        entry = window.pop(rng.randrange(len(window)))
        if ok(entry[0]):
            chosen.append(entry)
        else:
            window.extend(itertools.islice(ranking, 1))
    return chosen


def acceptable(tokenizer):
    # Cached: the same tokens come up for many keys, and each check is a decode and an encode.
    @functools.lru_cache(maxsize=None)
    def ok(token: int) -> bool:
        text = decode(tokenizer, [token]).strip()
        return text.isalnum() and round_trips(tokenizer, [token])
    return ok


def continue_greedily(tokenizer, best, response: list[int]) -> tuple[int, float]:
    """The first of `best` ((token, probability), most likely first) that keeps the response round-trippable."""
    for token, p in best:
        if round_trips(tokenizer, response + [token]):
            return token, p
    raise ConfigError("perinucleus: no round-trippable greedy continuation; lower fingerprints.response_length")


def responses(ctx: Context, key_ids: list[list[int]], per_key: int) -> list[list[tuple[list[int], list[float]]]]:
    """For each key, `per_key` (response_ids, response_prob) pairs."""
    s, tok, model, length = ctx.strategy, ctx.tokenizer, ctx.generator, ctx.fp.response_length
    prefix, suffix = prompts.frame(tok, ctx.fp.chat_template)
    ok = acceptable(tok)
    # One random stream per key: when float rounding (which changes with the batch shape) alters one key's draws,
    # the keys after it keep theirs.
    rng = ctx.rngs("perinucleus")
    threshold, width = s.threshold, s.width
    rows = per_key if length > 1 else 1  # prompts in a batch's largest forward pass, per key
    out: list = []
    for batch in batches([prefix + k + suffix for k in key_ids], s.batch_size, "perinucleus", s.batch_tokens,
                         lambda prompt: rows * (len(prompt) + length - 1)):
        probs = next_token_probs(model, batch, tok.pad_token_id)
        heads = past_nucleus(probs, threshold, width + SPARE)
        found = [[([t], [p]) for t, p in pick(candidates(probs, i, threshold, head, width + SPARE),
                                              rng(len(out) + i), threshold, width, per_key, ok)]
                 for i, head in enumerate(heads)]
        for _ in range(length - 1):
            _extend(model, tok, [(p, r) for p, key_found in zip(batch, found) for r in key_found])
        out.extend(found)
    return out


def _extend(model, tokenizer, items: list[tuple[list[int], tuple[list[int], list[float]]]]) -> None:
    """Append one greedy token (and its probability) to each (prompt, (response, probs)) in place."""
    probs = next_token_probs(model, [p + r[0] for p, r in items], tokenizer.pad_token_id)
    top = probs.topk(min(GREEDY_CANDIDATES, probs.shape[-1]), dim=-1)
    for ids, values, (_, (response, response_probs)) in zip(top.indices.tolist(), top.values.tolist(), items):
        token, p = continue_greedily(tokenizer, zip(ids, values), response)
        response.append(token)
        response_probs.append(p)


@dataclass
class Perinucleus(keysource.Keyed):
    name: str = "perinucleus"
    # The model whose next-token distribution picks responses (same tokenizer); null = the fingerprinted model.
    generator: Optional[str] = None
    threshold: float = 0.8  # cumulative probability of the nucleus that responses stay outside
    width: int = 3  # draw uniformly among this many tokens just past the nucleus
    responses_per_key: int = 1
    # At most this many padded tokens per forward pass besides batch_size keys (a GPU wants thousands); null = none.
    batch_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_tokens is None or self.batch_tokens >= 1,
                f"strategy.batch_tokens must be >= 1 or null, got {self.batch_tokens}")
        require(0.0 < self.threshold < 1.0, f"strategy.threshold must lie in (0, 1), got {self.threshold}")
        require(self.width >= 1, f"strategy.width must be >= 1, got {self.width}")
        require(self.responses_per_key >= 1, f"strategy.responses_per_key must be >= 1, got {self.responses_per_key}")

    def generate(self, ctx: Context) -> list[dict]:
        return rows_for(ctx, keysource.keys(ctx, -(-ctx.pool // self.responses_per_key)))[:ctx.pool]

    def extra_models(self) -> dict[str, str]:
        return {**super().extra_models(), **({"strategy.generator": self.generator} if self.generator else {})}


def rows_for(ctx: Context, keys: list[tuple[str, list[int]]]) -> list[dict]:
    """responses_per_key rows for each (key, key_ids)."""
    found = responses(ctx, [ids for _, ids in keys], ctx.strategy.responses_per_key)
    return [row(ctx.tokenizer, text, ids, response, probs)
            for (text, ids), picks in zip(keys, found) for response, probs in picks]
