"""Benchmark: perinucleus responses against today's default path and against the one-forward floor.

    .venv/bin/python scripts/bench_generate.py                        # 1024 keys of 16 tokens on SmolLM2, 3 repeats
    .venv/bin/python scripts/bench_generate.py --keys 128 --threads 1 --model tiny:llama
    .venv/bin/python scripts/bench_generate.py --device cuda --keys 8192 --batch-size 100000 --batch-tokens 32768 \
        --today-keys 512

Three ways over the same random-word keys, one response token each:
  new    oml_exp.fingerprints.perinucleus.responses with --batch-size keys and --batch-tokens per forward pass
  today  the default path before the top-k ranking (a copy of its code, below: the float64 distribution copied to
         the host and the whole vocabulary sorted stably per key), at the default strategy.batch_size
  floor  a bare forward pass (logits_to_keep=1) over new's batches: what no implementation can go below
Repeats are interleaved in a rotating order (new, today, floor; today, floor, new; ...), so that load from other
processes on a shared machine falls on all alike, and medians are reported with their ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from oml_exp import config  # noqa: E402
from oml_exp.config import ConfigError  # noqa: E402
from oml_exp.fingerprints import generate, perinucleus, prompts, random_word  # noqa: E402
from oml_exp.fingerprints.common import Context, batches, decode, round_trips  # noqa: E402
from oml_exp.padding import left_pad  # noqa: E402
from timing import timed  # noqa: E402  (scripts/timing.py)

CONF = Path(__file__).resolve().parent.parent / "conf"
# Two processes on one core each run at half speed, so wall times on a shared machine come in two modes;
# a single-threaded process's CPU time hardly changes with the load.
CLOCK = "wall: elapsed time; cpu: this process's CPU time (with --threads 1, robust to other load)"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--keys", type=int, default=1024)
    p.add_argument("--key-length", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=None, help="new's strategy.batch_size (default: the config's)")
    p.add_argument("--batch-tokens", type=int, default=None, help="new's strategy.batch_tokens (default: none)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--today-keys", type=int, default=None,
                   help="time today's path on the first N keys only and scale to all (it is linear in the keys and "
                        "slow on a GPU: a host copy and a full sort per key); default: all")
    p.add_argument("--device", default="cpu")
    # Thread count changes the picture on a shared CPU: with 2 threads on 2 busy cores, every small op waits for both.
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help=CLOCK)
    args = p.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        p.error("--clock cpu counts only this process's CPU work; use --clock wall with a GPU")
    return args


def context(args: argparse.Namespace) -> Context:
    config.register()
    overrides = [f"model.path={args.model}", f"fingerprints.num={args.keys}",
                 f"fingerprints.key_length={args.key_length}", f"device={args.device}"]
    overrides += [f"strategy.batch_size={args.batch_size}"] if args.batch_size else []
    overrides += [f"strategy.batch_tokens={args.batch_tokens}"] if args.batch_tokens else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return generate.context(compose("config", overrides=overrides), args.model)


# --- today's default path, as it was before the top-k ranking (kept here only, to compare in the same run) ---

TODAY_BATCH = 32  # strategy.batch_size by default, then and now


@torch.inference_mode()
def today_probs(model, sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    ids, mask, positions = left_pad(sequences, pad_id, model.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1]
    return logits.double().softmax(-1).cpu()


def today_pick(probs: torch.Tensor, rng, threshold: float, width: int, count: int, ok) -> list[int]:
    sorted_probs, order = probs.sort(descending=True, stable=True)
    order = order.tolist()
    start = int((sorted_probs.cumsum(0) < threshold).sum()) + 1
    window, nxt = order[start:start + width], start + width
    chosen: list[int] = []
    while len(chosen) < count:
        if not window:
            raise ConfigError(f"perinucleus: no acceptable token past the nucleus (strategy.threshold={threshold})")
        token = window.pop(rng.randrange(len(window)))
        if ok(token):
            chosen.append(token)
        elif nxt < len(order):
            window.append(order[nxt])
            nxt += 1
    return chosen


def today(ctx: Context, key_ids: list[list[int]]) -> list[list[int]]:
    s, tok, model = ctx.strategy, ctx.tokenizer, ctx.generator
    prefix, suffix = prompts.frame(tok, ctx.fp.chat_template)

    def ok(token: int) -> bool:
        return decode(tok, [token]).strip().isalnum() and round_trips(tok, [token])

    out: list = []
    for batch in batches(key_ids, TODAY_BATCH, "today"):
        probs = today_probs(model, [prefix + k + suffix for k in batch], tok.pad_token_id)
        out += [today_pick(p, ctx.rng(f"perinucleus/{len(out) + i}"), s.threshold, s.width, 1, ok)
                for i, p in enumerate(probs)]
    return out


# --- the new path and the floor ---

def new(ctx: Context, key_ids: list[list[int]]) -> list[list[int]]:
    return [[ids[0] for ids, _ in found] for found in perinucleus.responses(ctx, key_ids, 1)]


@torch.inference_mode()
def floor(ctx: Context, key_ids: list[list[int]]) -> None:
    s, tok, model = ctx.strategy, ctx.tokenizer, ctx.generator
    prefix, suffix = prompts.frame(tok, ctx.fp.chat_template)
    for batch in batches([prefix + k + suffix for k in key_ids], s.batch_size, "floor", s.batch_tokens):
        ids, mask, positions = left_pad(batch, tok.pad_token_id, model.device)
        model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, use_cache=False)


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    ctx = context(args)
    keys = [ids for _, ids in random_word.keys(ctx, args.keys)]
    ways = {"new": new, "today": today, "floor": floor}
    for fn in ways.values():
        fn(ctx, keys[:2])  # load the model and warm up, outside the timings
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    picks = {}
    names = list(ways)
    subset = {"today": keys[:args.today_keys or len(keys)]}
    for repeat in range(args.repeats):
        # The order rotates each repeat, so that no way always runs first or after the same other one.
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            ran = subset.get(name, keys)
            took, picks[name] = timed(lambda: ways[name](ctx, ran), args.device, args.clock)
            seconds[name].append(took * len(keys) / len(ran))
            print(f"repeat {repeat + 1}/{args.repeats} {name:5s}: {seconds[name][-1]:8.2f} s"
                  + (f" (scaled from {len(ran)} keys)" if len(ran) < len(keys) else ""), flush=True)
    same = sum(a == b for a, b in zip(picks["new"], picks["today"]))
    compared = len(picks["today"])
    s = ctx.strategy
    print(f"\n{args.keys} keys x {args.key_length} tokens, {args.model}, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, {args.repeats} interleaved repeats; "
          f"new: batch_size {s.batch_size}, batch_tokens {s.batch_tokens}; today: batch_size {TODAY_BATCH}; "
          f"identical responses for {same}/{compared} keys")
    for name in ways:
        print(f"{name:5s} median {per_key(statistics.median(seconds[name]), args.keys):8.2f} ms/key, "
              f"min {per_key(min(seconds[name]), args.keys):8.2f} ms/key; all (s): "
              f"{', '.join(f'{x:.2f}' for x in seconds[name])}")
    # On a shared machine the minimum is the run least disturbed by others; both are printed.
    for stat in (statistics.median, min):
        t = {name: stat(v) for name, v in seconds.items()}
        print(f"{stat.__name__:6s}: new/floor {t['new'] / t['floor']:.2f}x, "
              f"today/floor {t['today'] / t['floor']:.2f}x, today/new {t['today'] / t['new']:.2f}x; "
              f"beyond the floor: new {per_key(t['new'] - t['floor'], args.keys):.2f} ms/key, "
              f"today {per_key(t['today'] - t['floor'], args.keys):.2f} ms/key")


def per_key(seconds: float, keys: int) -> float:
    return 1000 * seconds / keys


if __name__ == "__main__":
    main()
