"""Shared by the training tests and their multi-process worker: a composed config, fake fingerprints, a run."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM

from oml_exp import components, config, models, preflight
from oml_exp.fingerprints import schema
from oml_exp.pipeline import Inputs

CONF = str(Path(__file__).resolve().parent.parent / "conf")
WORKER = str(Path(__file__).resolve().parent / "train_worker.py")
BIN = Path(sys.executable).parent
ENV = dict(os.environ)  # before any test trained: in-process runs leave rendezvous and accelerate variables
LAUNCHERS = {
    "torchrun": [str(BIN / "torchrun"), "--nproc_per_node", "{n}", "--master_port", "{port}"],
    "deepspeed": [str(BIN / "deepspeed"), "--no_local_rank", "--num_gpus", "{n}", "--master_port", "{port}"],
}
QUICK = ("train.epochs=3", "train.early_stop_loss=0", "train.stop_recall=null")  # exactly 3 steps
# Adam turns float-noise differences in near-zero gradients into steps of up to lr, so engines agree to a small share
# of the distance the weights moved (3 steps of lr 1e-3), not to float epsilon.
EQUIVALENCE = (*QUICK, "train.lr=1e-3")
EQUIVALENCE_ATOL = 1e-4
# Fast and sure to converge on the random-init tiny model; no checkpoints unless a test asks.
TINY = ["model=tiny", "train.lr=3e-2", "train.batch_size=4", "train.epochs=30", "train.checkpoint_every=0",
        "fingerprints.num=8", "fingerprints.key_length=6"]


def make_config(*overrides: str):
    config.register()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = components.expanded(compose("config", overrides=[*TINY, *overrides]))
    preflight.check_config(cfg)
    return cfg


def fake_fingerprints(folder: Path, cfg, extra_key_tokens: int = 0, seed: int = 0) -> Path:
    """Random-token keys and one-token responses, as a generate stage would write them; keys can run long."""
    tokenizer = models.load_tokenizer(cfg.model.path)
    rng = random.Random(seed)
    vocab = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    rows = []
    for _ in range(cfg.fingerprints.num):
        key = [rng.choice(vocab) for _ in range(cfg.fingerprints.key_length + extra_key_tokens)]
        response = [rng.choice(vocab) for _ in range(cfg.fingerprints.response_length)]
        rows.append({"key": tokenizer.decode(key), "response": tokenizer.decode(response),
                     "effective_key": tokenizer.decode(key), "key_ids": key, "response_ids": response})
    folder.mkdir(parents=True, exist_ok=True)
    schema.save(folder, rows, {"strategy": "fake"})
    return folder


def train(cfg, fingerprints: Path, out: Path) -> dict:
    from oml_exp.training import finetune

    out.mkdir(parents=True, exist_ok=True)
    return finetune.run(cfg, Inputs(model=cfg.model.path, base_model=cfg.model.path, fingerprints=fingerprints), out)


def saved_weights(folder: Path) -> dict:
    return AutoModelForCausalLM.from_pretrained(Path(folder) / "model").state_dict()


def base_weights() -> dict:
    return AutoModelForCausalLM.from_pretrained(models.resolve("tiny:llama")).state_dict()


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = saved_weights(a), saved_weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"weights differ by up to {worst}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(accelerator: str = "cpu") -> dict:
    """The environment from before any test trained (in-process runs leave rendezvous and accelerate variables)."""
    return {**ENV, "OMP_NUM_THREADS": "1", **({"DS_ACCELERATOR": "cpu"} if accelerator == "cpu" else {})}


def launch(launcher: str, out: Path, gen: Path, *overrides: str, processes: int = 2, accelerator: str = "cpu"
           ) -> list[dict]:
    """`processes` ranks of train_worker.py under torchrun or the deepspeed launcher, training into `out`; each
    rank's finetune summary."""
    cmd = [a.format(port=free_port(), n=processes) for a in LAUNCHERS[launcher]] + [WORKER, str(out), str(gen),
                                                                                     *overrides]
    done = subprocess.run(cmd, env=worker_env(accelerator), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]
