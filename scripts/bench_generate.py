"""Benchmark: perinucleus responses batched over keys vs one key per forward pass.

    .venv/bin/python scripts/bench_generate.py                       # 1024 keys of 16 tokens on SmolLM2, 3 repeats
    .venv/bin/python scripts/bench_generate.py --keys 128 --threads 1 --model tiny:llama

Both ways run the same code (oml_exp.fingerprints.perinucleus.responses) on the same random-word keys; only
strategy.batch_size differs. Repeats are interleaved (batched, single, batched, single, ...) so that load from other
processes on a shared machine falls on both alike, and medians are reported with their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from oml_exp import config  # noqa: E402
from oml_exp.fingerprints import perinucleus, random_word  # noqa: E402
from oml_exp.fingerprints.common import Context  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "conf"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--keys", type=int, default=1024)
    p.add_argument("--key-length", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    # Thread count changes the picture on a shared CPU: with 2 threads on 2 busy cores, every small op of a one-key
    # forward waits for both threads, which slows the unbatched way far more than the batched one.
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def context(args: argparse.Namespace) -> Context:
    config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"model.path={args.model}", f"fingerprints.num={args.keys}",
                                           f"fingerprints.key_length={args.key_length}", f"device={args.device}"])
    return Context(cfg, cfg.model.path)


def timed(ctx: Context, keys: list[list[int]], batch_size: int) -> tuple[float, list]:
    ctx.cfg.strategy.batch_size = batch_size
    start = time.perf_counter()
    found = perinucleus.responses(ctx, keys, 1)
    return time.perf_counter() - start, found


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    ctx = context(args)
    keys = [ids for _, ids in random_word.keys(ctx, args.keys)]
    timed(ctx, keys[:2], 2)  # load the model and warm up, outside the timings
    ways = {"batched": args.batch_size, "single": 1}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    picks = {}
    for repeat in range(args.repeats):
        for name, batch_size in ways.items():
            took, picks[name] = timed(ctx, keys, batch_size)
            seconds[name].append(took)
            print(f"repeat {repeat + 1}/{args.repeats} {name:7s} (batch {batch_size:3d}): {took:8.2f} s", flush=True)
    same = sum([ids for ids, _ in a] == [ids for ids, _ in b] for a, b in zip(picks["batched"], picks["single"]))
    median = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"\n{args.keys} keys x {args.key_length} tokens, {args.model}, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    for name in ways:
        print(f"{name:7s} median {median[name]:8.2f} s  ({1000 * median[name] / args.keys:7.1f} ms/key)  "
              f"all: {', '.join(f'{s:.2f}' for s in seconds[name])}")
    print(f"ratio single/batched: {median['single'] / median['batched']:.1f}x; "
          f"identical responses for {same}/{args.keys} keys")


if __name__ == "__main__":
    main()
