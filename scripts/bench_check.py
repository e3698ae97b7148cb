"""Benchmark the batched greedy check against its forward-pass floor and against one `generate` call per fingerprint.

    .venv/bin/python scripts/bench_check.py [--model embedded:smollm2-135m-instruct] [--num 1024] [--repeats 3]
        [--max-templates 2|all] [--chat false] [--generate-subset 128] [--response-lengths 1 8] [--sampling]

Fingerprints are random 16-token keys with random responses (timing does not depend on whether they were trained),
checked as the check stage checks them: under the plain key and --max-templates templates of each set (train and
held-out, spread over the file as check.max_templates spreads them), in each --chat mode; the variants are printed.
Ways to answer "would greedy decoding say this response?" for every fingerprint and variant:
  batched   oml_exp.checking.scoring.score, what the check stage runs (batches of --batch-size, sorted by length,
            left-padded; argmax, ranks and log-probabilities batched)
  floor     bare forward passes over the same batches (logits only where responses sit) and nothing else
  generate  one greedy `generate` call per fingerprint, as the reference checker does; on --generate-subset rows per
            repeat, scaled to all rows (it is linear in the count and too slow to run on all); 0 skips it
  sampled   with --sampling: the check stage's sampled checks on the plain key (predicted rates for the 16
            false-positive settings and `generate` draws of check.samples at each), for scale; not part of the ratio
Ways run interleaved in a rotating order within each repeat so machine load hits them alike; medians and ratios
are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from oml_exp import models  # noqa: E402
from oml_exp.checking import sampling, scoring, templates  # noqa: E402
from oml_exp.config import AugmentationConfig, CheckConfig  # noqa: E402
from oml_exp.fingerprints import prompts  # noqa: E402
from oml_exp.padding import left_pad  # noqa: E402
from oml_exp.tables import render  # noqa: E402
from timing import timed  # noqa: E402  (scripts/timing.py)


def fingerprints(tokenizer, num: int, key_length: int, response_length: int, seed: int) -> list[tuple[list, list]]:
    g = torch.Generator().manual_seed(seed)
    low, high = 100, len(tokenizer) - 100  # clear of special tokens
    return [(torch.randint(low, high, (key_length,), generator=g).tolist(),
             torch.randint(low, high, (response_length,), generator=g).tolist()) for _ in range(num)]


def variant_rows(tokenizer, variants, fps) -> list[tuple[list, list]]:
    rows = []
    for v in variants:
        before, after = prompts.frame(tokenizer, v.chat, v.template)
        rows += [(before + key + after, response) for key, response in fps]
    return rows


def batched(model, rows, pad_id, batch_size):
    scoring.score(model, rows, pad_id, batch_size)


@torch.inference_mode()
def floor(model, rows, pad_id, batch_size):
    for batch in scoring.by_length(rows, batch_size):
        seqs = [rows[i][0] + rows[i][1][:-1] for i in batch]
        ids, mask, positions = left_pad(seqs, pad_id, model.device)
        model(input_ids=ids, attention_mask=mask, position_ids=positions,
              logits_to_keep=max(len(rows[i][1]) for i in batch), use_cache=False)


@torch.inference_mode()
def one_generate_each(model, rows, pad_id):
    for prompt, response in rows:
        ids = torch.tensor([prompt], device=model.device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(response), do_sample=False,
                             pad_token_id=pad_id)
        _ = out[0, len(prompt):].tolist() == response


def sampled(model, rows, pad_id, batch_size):
    settings = sampling.settings(["ordinary", "adversarial"])
    sampling.hit_probabilities(model, rows, settings, pad_id, batch_size)
    for s in settings:
        sampling.sampled_hits(model, rows, s, CheckConfig.samples, pad_id, batch_size)


def bench(model, tokenizer, variants, args, response_length: int) -> list:
    fps = fingerprints(tokenizer, args.num, args.key_length, response_length, seed=response_length)
    rows = variant_rows(tokenizer, variants, fps)
    subset = rows[::max(1, len(rows) // args.generate_subset)][:args.generate_subset] if args.generate_subset else []
    pad, size = tokenizer.pad_token_id, args.batch_size
    ways = {"batched": lambda: batched(model, rows, pad, size), "floor": lambda: floor(model, rows, pad, size)}
    if subset:
        ways["generate"] = lambda: one_generate_each(model, subset, pad)
    if args.sampling:
        ways["sampled"] = lambda: sampled(model, rows[:args.num], pad, size)
    scale = {"generate": len(rows) / max(1, len(subset))}
    batched(model, rows[:size], pad, size)  # warm-up: first-call allocations
    times: dict[str, list[float]] = {k: [] for k in ways}
    names = list(ways)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            times[name].append(timed(ways[name], model.device, args.clock)[0] * scale.get(name, 1))
        print(f"  response {response_length}, repeat {repeat + 1}: "
              + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return [response_length, len(rows), med["batched"], med["floor"], f"{med['batched'] / med['floor']:.2f}x",
            f"{med['generate']:.1f} ({med['generate'] / med['batched']:.1f}x)" if subset else "-",
            f"{med['sampled']:.1f}" if args.sampling else "-"]


def flag(text: str) -> bool:
    return text.lower() in ("1", "true", "yes")


def templates_per_set(text: str) -> int | None:
    return None if text == "all" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num", type=int, default=1024)
    parser.add_argument("--key-length", type=int, default=16)
    parser.add_argument("--response-lengths", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-templates", type=templates_per_set, default=2,
                        help="templates per set (0: plain key only, all: every template of both files)")
    parser.add_argument("--chat", type=flag, nargs="+", default=[False], help="chat modes, e.g. --chat false true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generate-subset", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=CheckConfig.batch_size)
    parser.add_argument("--sampling", action="store_true")
    # Two processes on one core each run at half speed, so wall times on a shared machine come in two modes; a
    # single-threaded process's CPU time hardly changes with the load.
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (with OMP_NUM_THREADS=1)")
    args = parser.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu counts only this process's CPU work; use --clock wall with a GPU")
    model, tokenizer = models.load(args.model, device=args.device)
    sets = ["plain", "train", "heldout"] if args.max_templates != 0 else ["plain"]
    variants, notes = templates.variants(sets, args.chat, args.chat[0], tokenizer.chat_template is not None,
                                         templates.files(AugmentationConfig.templates), args.max_templates or None)
    kinds = Counter(f"{'chat' if v.chat else 'raw'}/{v.set}" for v in variants)
    print(f"{args.model} on {args.device}: {args.num} fingerprints x {len(variants)} variants "
          f"({', '.join(f'{k} {n}' for k, n in kinds.items())}), {args.key_length}-token keys, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads, {args.clock} clock; generate timed on {args.generate_subset} rows "
          "per repeat and scaled" + "".join(f"; {n}" for n in notes))
    rows = [bench(model, tokenizer, variants, args, r) for r in args.response_lengths]
    print(render(f"median of {args.repeats} interleaved repeats (seconds for all rows)",
                 ["response tokens", "rows", "batched", "floor", "batched/floor", "generate each", "sampled"], rows))


if __name__ == "__main__":
    main()
