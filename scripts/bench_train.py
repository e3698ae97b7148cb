"""Benchmark the finetune stage on SmolLM2 (or any model): throughput, steps to full recall, augmentation.

  .venv/bin/python scripts/bench_train.py [--parts throughput,recall,augmentation,recipes] [--repeats 3] [--num 64]
                                          [--override KEY=VALUE ...] [--recipe NAME=KEY=VALUE,KEY=VALUE ...]

throughput    fingerprint tokens per second (real, non-pad tokens) and padding waste for engine=torch and
              engine=deepspeed_zero2, `--steps` optimizer steps each, engines interleaved within each repeat; medians.
recall        the default recipe on `--num` perinucleus fingerprints: optimizer steps and training seconds (recall
              probes excluded) until every fingerprint is recalled (greedy exact match, checked after every step).
augmentation  the default recipe with augmentation=none and =templates: recall under the plain key, the training
              templates and the held-out templates of the check stage.
recipes       each `--recipe` (default: `old`, the reference's one step per epoch with the loss stop, and `new`,
              today's defaults: 64 fingerprints per step, stop on full recall) run as the pipeline would, one after
              the other: optimizer steps, training seconds, exact recall of the saved model (plain keys), drift
              from the base (top-1 agreement and KL on texts the base wrote), micro-batch, tokens/s, model TFLOP/s
              (6 x parameters x real tokens per second), and their ratio to the GEMM rate measured in the same run
              on the training device in its dtype (fp32 on CPU, bf16 on GPU): `seconds_over_gemm_floor`; with
              --peak-tflops, the share of the device's peak.
Fingerprints come from the generate stage (store under --store). Results: JSON on stdout and in --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402
from transformers import AutoModelForCausalLM, TrainerCallback  # noqa: E402

import torch  # noqa: E402

from oml_exp import config, models, pipeline, templates  # noqa: E402
from oml_exp.evaluation import drift  # noqa: E402
from oml_exp.fingerprints import schema  # noqa: E402
from oml_exp.store import read_json  # noqa: E402
from oml_exp.training import data, finetune  # noqa: E402
from oml_exp.training.recall import recalled  # noqa: E402
from timing import timed  # noqa: E402  (scripts/timing.py)

CONF = str(Path(__file__).resolve().parent.parent / "conf")


def make_config(args, *overrides):
    config.register()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=[f"model.path={args.model}", f"fingerprints.num={args.num}",
                                           f"device={args.device}",
                                           f"paths.store={args.store}", "train.checkpoint_every=0",
                                           "train.checkpoint_minutes=0", *args.override,
                                           *overrides])
    config.validate(cfg)
    return cfg


def fingerprints(cfg) -> Path:
    inputs = pipeline.Inputs(model=cfg.model.path, base_model=cfg.model.path)
    return pipeline.run_stage("generate", cfg, inputs, {}).folder


def train(cfg, gen: Path, callbacks=(), inspect=None) -> dict:
    """The finetune stage's summary; `inspect(folder)` may read the stage folder before it is deleted."""
    with tempfile.TemporaryDirectory() as out:
        inputs = pipeline.Inputs(model=cfg.model.path, base_model=cfg.model.path, fingerprints=gen)
        summary = finetune.run(cfg, inputs, Path(out), callbacks)
        return {**summary, **(inspect(Path(out)) if inspect else {})}


def probe_sets(cfg, gen: Path, tokenizer) -> dict[str, list[list[dict]]]:
    """Labelled examples per prompt set: the plain key, each training template, each held-out template."""
    rows = schema.load(gen, cfg.fingerprints.num)
    items, _ = data.pairs(rows, cfg.fingerprints.key_length, tokenizer.eos_token_id if cfg.fingerprints.eos else None)
    chat = cfg.fingerprints.chat_template

    def wrapped(rows):
        return [list(data.FingerprintDataset(tokenizer, items, chat, [t], fraction=1.0)) for t in rows]

    return {"plain": [list(data.FingerprintDataset(tokenizer, items, chat))],
            "train_templates": wrapped(templates.load(templates.path("train_templates.json"))),
            "heldout_templates": wrapped(templates.load(templates.path(templates.HELDOUT)))}


def recall_rate(model, examples: list[list[dict]], collator) -> float:
    hits = [h for group in examples for h in recalled(model, group, collator)]
    return sum(hits) / len(hits)


class RecallProbe(TrainerCallback):
    """Checks recall after every optimizer step; stops the run at full recall; keeps its own time out of the clock."""

    def __init__(self, examples, collator):
        self.examples, self.collator = examples, collator
        self.history, self.probe_seconds, self.start = [], 0.0, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        began = time.time()
        model.eval()
        rate = recall_rate(model, self.examples, self.collator)
        model.train()
        self.probe_seconds += time.time() - began
        self.history.append({"step": state.global_step, "recall": rate,
                             "seconds": round(time.time() - self.start - self.probe_seconds, 2)})
        if rate == 1.0:
            control.should_training_stop = True


def bench_throughput(args, gen) -> dict:
    runs = {engine: [] for engine in ("torch", "deepspeed_zero2")}
    for _ in range(args.repeats):
        for engine in runs:
            cfg = make_config(args, f"engine={engine}", f"train.epochs={args.steps}", "train.early_stop_loss=0")
            runs[engine].append(train(cfg, gen))
    return {engine: {"tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in rs),
                     "tokens_per_s": [r["tokens_per_s"] for r in rs],
                     "padding_waste": rs[0]["padding_waste"], "steps": args.steps}
            for engine, rs in runs.items()}


def bench_recall(args, gen) -> dict:
    cfg = make_config(args, "train.early_stop_loss=0")
    tokenizer = models.load_tokenizer(cfg.model.path)
    probe = RecallProbe(probe_sets(cfg, gen, tokenizer)["plain"], data.Collator(tokenizer.pad_token_id))
    summary = train(cfg, gen, [probe])
    full = next((h for h in probe.history if h["recall"] == 1.0), None)
    return {"steps_to_full_recall": full and full["step"], "seconds_to_full_recall": full and full["seconds"],
            "history": probe.history, "lr": cfg.train.lr, "batch_size": cfg.train.batch_size,
            "grad_accum": cfg.train.grad_accum, "padding_waste": summary["padding_waste"]}


class FinalRecall(TrainerCallback):
    def __init__(self, sets, collator):
        self.sets, self.collator, self.rates = sets, collator, {}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        self.rates = {name: round(recall_rate(model, examples, self.collator), 4) for name, examples in self.sets.items()}


def bench_augmentation(args, gen) -> dict:
    results = {}
    for aug in ("none", "templates"):
        cfg = make_config(args, f"augmentation={aug}")
        tokenizer = models.load_tokenizer(cfg.model.path)
        final = FinalRecall(probe_sets(cfg, gen, tokenizer), data.Collator(tokenizer.pad_token_id))
        summary = train(cfg, gen, [final])
        results[aug] = {"recall": final.rates, "steps": summary["steps"], "seconds": summary["seconds"],
                        "padding_waste": summary["padding_waste"]}
    return results


# The reference's recipe (one step per epoch, loss stop) against today's defaults (64 per step, stop on full recall).
DEFAULT_RECIPES = ["old=train.fingerprints_per_step=null,train.stop_recall=null", "new="]


def gemm_rate(hidden: int, inner: int, tokens: int, device: torch.device, dtype: torch.dtype,
              repeats: int = 20) -> float:
    """FLOP/s of the model's MLP-shaped matmul at the micro-batch's token count, on the training device in the training
    dtype (fp32 on CPU, bf16 on GPU), best of a few."""
    a = torch.randn(tokens, hidden, device=device, dtype=dtype)
    b = torch.randn(hidden, inner, device=device, dtype=dtype)
    best = min(timed(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2 * tokens * hidden * inner / best


def bench_recipes(args, gen) -> dict:
    # Recall and drift of the saved model are judged in fp32 on the training device.
    base, tokenizer = models.load(args.model, args.device, "float32")
    texts = drift.texts(base, tokenizer, args.drift_texts, 32, None)
    collator = data.Collator(tokenizer.pad_token_id)
    params = sum(p.numel() for p in base.parameters())
    results = {}
    for spec in args.recipe or DEFAULT_RECIPES:
        name, _, overrides = spec.partition("=")
        cfg = make_config(args, *[o for o in overrides.split(",") if o])

        def inspect(folder: Path) -> dict:
            model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32).to(base.device)
            examples = list(data.FingerprintDataset(tokenizer, [data.Pair(r["key_ids"], r["response_ids"])
                                                                for r in read_json(folder / "train_set.json")],
                                                    cfg.fingerprints.chat_template))
            measured = drift.measure(base, model, texts, tokenizer.pad_token_id)
            return {"exact_recall": sum(recalled(model, examples, collator)) / len(examples),
                    "top1_agreement": round(measured["top1_agreement"], 4), "kl": round(measured["kl"], 5),
                    "example_tokens": max(len(e["input_ids"]) for e in examples)}

        r = train(cfg, gen, inspect=inspect)
        device = models.pick_device(cfg.device)
        rate = gemm_rate(base.config.hidden_size, base.config.intermediate_size, r["micro_batch"] * r["example_tokens"],
                         device, models.pick_dtype(cfg.model.dtype, device))
        # Training FLOPs of the real (non-pad) tokens: 6 x parameters per token, forward and backward.
        achieved = 6 * params * r["tokens_per_s"]
        results[name] = {"overrides": overrides, **{k: r[k] for k in (
            "steps", "epochs", "seconds", "exact_recall", "top1_agreement", "kl", "micro_batch", "accumulation",
            "stopped_on", "steps_to_full_recall", "final_loss", "padding_waste")},
            "tokens_per_s": r["tokens_per_s"], "device": str(device), "dtype": r["dtype"],
            "model_tflops_per_s": float(f"{achieved / 1e12:.3g}"), "gemm_tflops_per_s": float(f"{rate / 1e12:.3g}"),
            "seconds_over_gemm_floor": round(rate / achieved, 2),
            **({"share_of_peak": float(f"{achieved / (args.peak_tflops * 1e12):.3g}")} if args.peak_tflops else {})}
        print(json.dumps({name: results[name]}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="throughput,recall,augmentation")
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--device", default="auto", help="the config's device: auto (a GPU if any), cpu, cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per throughput run")
    parser.add_argument("--store", default="outputs/stages")
    parser.add_argument("--override", nargs="*", default=[], help="extra config overrides, e.g. train.lr=1e-4")
    parser.add_argument("--json", default="outputs/bench_train.json")
    parser.add_argument("--recipe", action="append", help="recipes part: NAME=KEY=VALUE,KEY=VALUE (repeatable; "
                                                          "default: old (the reference's recipe) and new (the defaults))")
    parser.add_argument("--drift-texts", type=int, default=8, help="recipes part: base-written texts for drift")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="recipes part: the device's nominal peak in the training dtype (H200 bf16 dense: 989), "
                             "for the share of it reached")
    args = parser.parse_args()
    gen = fingerprints(make_config(args))
    parts = {"throughput": bench_throughput, "recall": bench_recall, "augmentation": bench_augmentation,
             "recipes": bench_recipes}
    results = {"command": " ".join(sys.argv), "model": args.model, "fingerprints": args.num,
               "threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count()}
    for part in args.parts.split(","):
        before = os.getloadavg()[1]
        results[part] = parts[part](args, gen)
        # Other users of a shared machine show up here: compare timings only between runs of similar load.
        results[part]["load_average_5min"] = [round(before, 2), round(os.getloadavg()[1], 2)]
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")  # keep what finished if a later part dies
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
