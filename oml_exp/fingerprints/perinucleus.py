"""perinucleus (inverse nucleus) responses: just outside the generator's top-p nucleus after the key.

For each key, sort the next-token distribution, skip the nucleus of cumulative probability `threshold` and the token
that crosses it, then draw uniformly among the next `width` tokens; a token that is not alphanumeric or does not
survive a decode/encode round trip is dropped and the window widens by one. Responses longer than one token continue
greedily (the most likely token that keeps the response round-trippable). The distribution is taken after the key
as training feeds it: prompts.build, so with fingerprints.chat_template the key sits in the chat template.

Keys are processed in batches, left-padded with position ids counting real tokens only, so each key's own last
position is the batch's last column and every key sees the positions it would see alone.
"""

from __future__ import annotations

import random

import torch

from oml_exp.config import ConfigError
from oml_exp.fingerprints import keysource, prompts
from oml_exp.fingerprints.common import Context, batches, decode, round_trips, row
from oml_exp.padding import left_pad

GREEDY_CANDIDATES = 64  # how far down the ranking a greedy continuation looks for a round-trippable token


@torch.inference_mode()
def next_token_probs(model, sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """[len(sequences), vocab] float64 probabilities of the token after each sequence, in one forward pass."""
    ids, mask, positions = left_pad(sequences, pad_id, model.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1]
    return logits.double().softmax(-1).cpu()


def outside_nucleus(probs: torch.Tensor, threshold: float) -> int:
    """Rank of the first token past the nucleus: the nucleus is every token before the one whose cumulative
    probability reaches `threshold`, and that crossing token is skipped too."""
    return int((probs.cumsum(0) < threshold).sum()) + 1


def pick(probs: torch.Tensor, rng: random.Random, threshold: float, width: int, count: int, ok) -> list[int]:
    """`count` distinct tokens drawn from the widening window just past the nucleus; `probs` is one distribution."""
    sorted_probs, order = probs.sort(descending=True, stable=True)
    order = order.tolist()
    start = outside_nucleus(sorted_probs, threshold)
    window, nxt = order[start:start + width], start + width
    chosen: list[int] = []
    while len(chosen) < count:
        if not window:
            raise ConfigError(f"perinucleus: no acceptable token past the nucleus (strategy.threshold={threshold}); "
                              "lower strategy.threshold")
        token = window.pop(rng.randrange(len(window)))
        if ok(token):
            chosen.append(token)
        elif nxt < len(order):
            window.append(order[nxt])
            nxt += 1
    return chosen


def acceptable(tokenizer):
    def ok(token: int) -> bool:
        text = decode(tokenizer, [token]).strip()
        return text.isalnum() and round_trips(tokenizer, [token])
    return ok


def continue_greedily(tokenizer, probs: torch.Tensor, response: list[int]) -> int:
    for token in probs.topk(GREEDY_CANDIDATES).indices.tolist():
        if round_trips(tokenizer, response + [token]):
            return token
    raise ConfigError("perinucleus: no round-trippable greedy continuation; lower fingerprints.response_length")


def responses(ctx: Context, key_ids: list[list[int]], per_key: int) -> list[list[tuple[list[int], list[float]]]]:
    """For each key, `per_key` (response_ids, response_prob) pairs."""
    s, tok, model = ctx.strategy, ctx.tokenizer, ctx.generator
    prefix, suffix = prompts.frame(tok, ctx.fp.chat_template)
    ok = acceptable(tok)
    out: list = []
    for batch in batches(key_ids, s.batch_size, "perinucleus"):
        inputs = [prefix + k + suffix for k in batch]
        probs = next_token_probs(model, inputs, tok.pad_token_id)
        # One random stream per key: when float rounding (which changes with the batch shape) alters one key's
        # draws, the keys after it keep theirs.
        firsts = [pick(p, ctx.rng(f"perinucleus/{len(out) + i}"), s.threshold, s.width, per_key, ok)
                  for i, p in enumerate(probs)]
        found = [[([t], [float(p[t])]) for t in f] for p, f in zip(probs, firsts)]
        for _ in range(ctx.fp.response_length - 1):
            _extend(model, tok, [(p, r) for p, key_found in zip(inputs, found) for r in key_found])
        out.extend(found)
    return out


def _extend(model, tokenizer, items: list[tuple[list[int], tuple[list[int], list[float]]]]) -> None:
    """Append one greedy token (and its probability) to each (prompt, (response, probs)) in place."""
    probs = next_token_probs(model, [p + r[0] for p, r in items], tokenizer.pad_token_id)
    for dist, (_, (response, response_probs)) in zip(probs, items):
        token = continue_greedily(tokenizer, dist, response)
        response.append(token)
        response_probs.append(float(dist[token]))


def generate(ctx: Context) -> list[dict]:
    return rows_for(ctx, keysource.keys(ctx, -(-ctx.pool // ctx.strategy.responses_per_key)))[:ctx.pool]


def rows_for(ctx: Context, keys: list[tuple[str, list[int]]]) -> list[dict]:
    """responses_per_key rows for each (key, key_ids)."""
    found = responses(ctx, [ids for _, ids in keys], ctx.strategy.responses_per_key)
    return [row(ctx.tokenizer, text, ids, response, probs)
            for (text, ids), picks in zip(keys, found) for response, probs in picks]
