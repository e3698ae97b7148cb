"""Stage order, stage hashing and the run folder.

Each stage is a module with two functions:
  key(cfg) -> dict                          the config its output depends on, and nothing else
  run(cfg, inputs, out) -> dict             fill the temporary folder `out`; return a summary without keys
A stage that can resume a killed build (finetune, from its checkpoints) sets `RESUMABLE = True`; one whose work
spans all processes of a launcher (torchrun, `deepspeed --no_local_rank`) sets `DISTRIBUTED = True`: every rank runs
it into the same temporary folder, while for the other stages ranks > 0 wait for rank 0's output.
The pipeline hashes key(cfg) together with the hashes of the stage outputs it reads, the identity of the model it
works on (its content, see models.identity) and the code and packaged data the stage runs (provenance.stage_code:
the modules it imports, not the report), and keeps the output in `<store>/<stage>/<hash>/`. A complete output gets
a manifest of its files (manifest.py); one already there is checked against it and reused, a damaged one stops the
run; `force=true` rebuilds the outputs this run uses. Stages talk only through the files in those folders.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from oml_exp import checking, components, manifest, models, preflight, provenance, verification
from oml_exp.attacks import stage as attacking
from oml_exp.evaluation import evaluate
from oml_exp.fingerprints import generate
from oml_exp.reporting import report
from oml_exp.training import finetune
from oml_exp.config import stages_to_run
from oml_exp.store import atomic_dir, digest, file_digest, partial_dir, read_json, write_json
from oml_exp import distributed

log = logging.getLogger(__name__)

# The stages kept in the store, in order; `verify` (oml_exp/verification) writes to the run folder, and `report` (the
# run folder's summary) is the pipeline's own last step.
MODULES = {"generate": generate, "finetune": finetune, "attack": attacking, "check": checking, "evaluate": evaluate}
SUMMARY = "summary.json"
RECORD = "stage.json"


@dataclass
class Inputs:
    """What a stage reads: upstream stage folders and the model specs to load (see oml_exp/models.py)."""

    model: str  # the model this stage works on: the fine-tuned folder, or model.path when nothing was fine-tuned
    base_model: str  # model.path: the model before fingerprinting
    fingerprints: Optional[Path] = None  # a generate stage folder
    base_eval: Optional[Path] = None  # the evaluate stage folder of the base model (for paired comparisons)
    upstream: dict = field(default_factory=dict)  # stage name -> folder, for the record


@dataclass
class StageResult:
    stage: str
    folder: Path
    summary: dict
    skipped: bool
    seconds: float


def model_identity(spec: str, results: dict[str, StageResult]) -> str:
    """Name a model for hashing: a model this run built (fine-tuned, attacked) by its stage hash, anything else by
    its spec."""
    for r in results.values():
        if spec == str(r.folder / "model"):
            return f"{r.stage}:{r.folder.name}"
    return models.identity(spec)


def run_stage(stage: str, cfg: DictConfig, inputs: Inputs, results: dict[str, StageResult]) -> StageResult:
    module = MODULES[stage]
    key = {
        "stage": module.key(cfg),
        "model": model_identity(inputs.model, results),
        "base_model": models.identity(inputs.base_model),
        "upstream": {name: Path(path).name for name, path in sorted(inputs.upstream.items())},
        "code": provenance.stage_code(module.__name__),
    }
    if stage == "generate" and cfg.fingerprints.file:
        key["file"] = file_digest(cfg.fingerprints.file)
    folder = Path(cfg.paths.store) / stage / digest(key)
    start = time.time()
    if not distributed.is_main():
        return _follow(stage, module, cfg, inputs, folder, start)
    with atomic_dir(folder, force=bool(cfg.force), resumable=getattr(module, "RESUMABLE", False)) as tmp:
        if tmp is not None:
            log.info("[%s] running -> %s", stage, folder)
            summary = module.run(cfg, inputs, tmp)
            write_json(tmp / SUMMARY, summary)
            write_json(tmp / RECORD, {"stage": stage, "hash": folder.name, "key": key,
                                      "seconds": round(time.time() - start, 2)})
            manifest.write(tmp)  # last, after the stage's own files (finetune has pruned its checkpoints by now)
    skipped = tmp is None
    if skipped:
        manifest.check(folder)
        log.info("[%s] skipped: complete in %s", stage, folder)
    return StageResult(stage, folder, read_json(folder / SUMMARY), skipped, time.time() - start)


def _follow(stage: str, module, cfg: DictConfig, inputs: Inputs, folder: Path, start: float) -> StageResult:
    """A rank > 0: join a distributed stage in rank 0's temporary folder, then wait for rank 0 to finish it."""
    ran = getattr(module, "DISTRIBUTED", False) and (cfg.force or not folder.exists())
    if ran:
        module.run(cfg, inputs, partial_dir(folder))
    while not (folder / RECORD).exists():
        time.sleep(0.5)
    if not ran:
        manifest.check(folder)
    return StageResult(stage, folder, read_json(folder / SUMMARY), not ran, time.time() - start)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Check what can be checked before any stage runs, run the configured stages and write the run folder's
    summary; return that summary."""
    cfg = components.expanded(cfg)
    preflight.check(cfg)
    stages = stages_to_run(cfg)
    results: dict[str, StageResult] = {}
    base = cfg.model.path
    # The models the check and evaluate stages measure: the run's own ("": fine-tuned, or model.path) and each
    # attacked one ("/NAME": its results are "check/NAME", "evaluate/NAME").
    measured = {"": base}
    for stage in stages:
        if stage == "report":
            continue
        if stage == "finetune":
            results[stage] = run_stage(stage, cfg, _inputs(base, base, results), results)
            measured[""] = str(results[stage].folder / "model")
        elif stage == "attack":
            for name, node in attacking.entries(cfg.attack):
                attacked = _attack(cfg, name, node, measured[""], base, results)
                measured[f"/{name}"] = str(attacked.folder / "model")
        elif stage == "verify":
            # Its answer comes from a remote model: it writes to the run folder, never to the store.
            start = time.time()
            summary = verification.run(cfg, _inputs(measured[""], base, results), run_dir)
            results[stage] = StageResult(stage, run_dir, summary, False, time.time() - start)
        elif stage == "evaluate":
            # The base model's scores are one store entry per model and eval config, shared by every run on it.
            results["evaluate_base"] = run_stage(stage, cfg, Inputs(model=base, base_model=base), results)
            for suffix, model in measured.items():
                if model != base:
                    inputs = Inputs(model=model, base_model=base, base_eval=results["evaluate_base"].folder,
                                    upstream={**_made(model, results), "evaluate_base": results["evaluate_base"].folder})
                    results[stage + suffix] = run_stage(stage, cfg, inputs, results)
        elif stage == "check":
            for suffix, model in measured.items():
                upstream = {"generate": results["generate"].folder, **_made(model, results)}
                results[stage + suffix] = run_stage(stage, cfg, _inputs(model, base, results, upstream), results)
        else:
            results[stage] = run_stage(stage, cfg, _inputs(base, base, results), results)
    return report.run(cfg, results, run_dir, write="report" in stages)


def _inputs(model: str, base: str, results: dict[str, StageResult], upstream: dict | None = None) -> Inputs:
    gen = results.get("generate")
    return Inputs(model=model, base_model=base, fingerprints=gen.folder if gen else None,
                  upstream=upstream if upstream is not None else {s: r.folder for s, r in results.items()})


def _made(model: str, results: dict[str, StageResult]) -> dict[str, Path]:
    """The stage folder that built `model` (finetune or an attack), for the record; {} for a model named by spec."""
    return {name: r.folder for name, r in results.items() if model == str(r.folder / "model")}


def _attack(cfg: DictConfig, name: str, node: DictConfig, model: str, base: str,
            results: dict[str, StageResult]) -> StageResult:
    """One attack on `model`; a merge partner made from the base model first (its own store entry)."""
    upstream = _made(model, results)
    partner = attacking.partner(node, name)
    if partner is not None:
        made = run_stage("attack", attacking.one(cfg, "partner", partner), Inputs(model=base, base_model=base), {})
        results[f"attack/{name}/partner"] = made
        upstream["partner"] = made.folder
    results[f"attack/{name}"] = run_stage("attack", attacking.one(cfg, name, node),
                                          Inputs(model=model, base_model=base, upstream=upstream), results)
    return results[f"attack/{name}"]
