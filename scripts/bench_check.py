"""Benchmark the batched greedy check against one `generate` call per fingerprint and against a bare forward pass.

    .venv/bin/python scripts/bench_check.py [--model embedded:smollm2-135m-instruct] [--num 1024] [--repeats 3]
                                            [--generate-subset 128] [--response-lengths 1 8]

Fingerprints are random 16-token keys with random responses (timing does not depend on whether they were trained).
Three ways to answer "would greedy decoding say this response?" for all of them:
  batched   oml_exp.checking.scoring.score, what the check stage runs (batches of --batch-size, sorted, left-padded)
  generate  one greedy `generate` call per fingerprint, as the reference checker does; on --generate-subset
            fingerprints per repeat, scaled to --num (it is linear in the count and too slow to run on all)
  forward   the floor: one forward pass over all fingerprints' tokens at once, logits only where responses sit
Methods run interleaved within each repeat so machine load hits them alike; the medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from oml_exp import models  # noqa: E402
from oml_exp.checking import scoring  # noqa: E402
from oml_exp.tables import render  # noqa: E402


def fingerprints(tokenizer, num: int, key_length: int, response_length: int, seed: int) -> list[tuple[list, list]]:
    g = torch.Generator().manual_seed(seed)
    low, high = 100, len(tokenizer) - 100  # clear of special tokens
    return [(torch.randint(low, high, (key_length,), generator=g).tolist(),
             torch.randint(low, high, (response_length,), generator=g).tolist()) for _ in range(num)]


def batched(model, rows, pad_id, batch_size):
    scoring.score(model, rows, pad_id, batch_size)


@torch.inference_mode()
def one_generate_each(model, rows, pad_id):
    for prompt, response in rows:
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(response), do_sample=False,
                             pad_token_id=pad_id)
        _ = out[0, len(prompt):].tolist() == response


@torch.inference_mode()
def single_forward(model, rows):
    # The same tokens the check feeds (the last response token predicts nothing), unpadded, in one call.
    ids = torch.tensor([prompt + response[:-1] for prompt, response in rows])
    model(input_ids=ids, logits_to_keep=len(rows[0][1]), use_cache=False)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(model, tokenizer, args, response_length: int) -> list:
    rows = fingerprints(tokenizer, args.num, args.key_length, response_length, seed=response_length)
    subset = rows[:args.generate_subset]
    pad = tokenizer.pad_token_id
    times = {"batched": [], "generate": [], "forward": []}
    batched(model, rows[:args.batch_size], pad, args.batch_size)  # warm-up: first-call allocations
    for _ in range(args.repeats):
        times["batched"].append(timed(lambda: batched(model, rows, pad, args.batch_size)))
        times["generate"].append(timed(lambda: one_generate_each(model, subset, pad)) * args.num / len(subset))
        times["forward"].append(timed(lambda: single_forward(model, rows)))
        print(f"  response {response_length}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return [response_length, med["batched"], med["generate"], med["forward"],
            f"{med['generate'] / med['batched']:.1f}x", f"{med['batched'] / med['forward']:.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--num", type=int, default=1024)
    parser.add_argument("--key-length", type=int, default=16)
    parser.add_argument("--response-lengths", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generate-subset", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    model, tokenizer = models.load(args.model, device="cpu")
    print(f"{args.model}: {args.num} fingerprints, {args.key_length}-token keys, {torch.get_num_threads()} threads, "
          f"generate timed on {min(args.generate_subset, args.num)} per repeat and scaled to {args.num}")
    rows = [bench(model, tokenizer, args, r) for r in args.response_lengths]
    print(render(f"median of {args.repeats} interleaved repeats (seconds for all {args.num} fingerprints)",
                 ["response tokens", "batched", "generate each", "one forward", "generate/batched",
                  "batched/forward"], rows))


if __name__ == "__main__":
    main()
