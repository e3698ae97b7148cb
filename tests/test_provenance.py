"""Store keys cover the code, packaged data, user files and model content a stage reads, and nothing else."""

import json
import os
import shutil
from pathlib import Path

import torch

from oml_exp import models, pipeline, provenance

STAGE_MODULES = {stage: module.__name__ for stage, module in pipeline.MODULES.items()}
FAST = ["model=tiny", "fingerprints.num=2", "fingerprints.key_length=8", "train.epochs=1", "eval.pack=null",
        "eval.drift_texts=2", "eval.drift_tokens=4", "check.temperatures=[]", "check.templates=[plain]"]


def package_copy(tmp_path: Path) -> Path:
    root = tmp_path / "src" / "oml_exp"
    shutil.copytree(provenance.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def codes(root: Path) -> dict:
    return {stage: provenance.stage_code(module, root) for stage, module in STAGE_MODULES.items()}


def changed(before: dict, after: dict) -> set:
    return {stage for stage in before if before[stage] != after[stage]}


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_a_modules_source_changes_the_stages_that_import_it_and_only_those(tmp_path):
    root = package_copy(tmp_path)
    assert codes(root) == codes(provenance.PACKAGE), "the digest depends on the files' content, not their place"
    before = codes(root)

    append(root / "training" / "data.py", "\n# edited\n")
    assert changed(before, codes(root)) == {"finetune"}
    before = codes(root)

    append(root / "evaluation" / "drift.py", "\n# edited\n")  # imported only by the evaluate stage
    assert changed(before, codes(root)) == {"evaluate"}
    before = codes(root)

    append(root / "models.py", "\n# edited\n")  # every stage loads models
    assert changed(before, codes(root)) == set(STAGE_MODULES)
    before = codes(root)

    for path in (root / "reporting").glob("*.py"):
        append(path, "\n# edited\n")
    assert changed(before, codes(root)) == set(), "the report only reads stage outputs"


def test_imports_inside_functions_and_package_inits_count(tmp_path):
    files = {p.relative_to(provenance.PACKAGE).as_posix()
             for p in provenance.reachable("oml_exp.training.finetune", provenance.PACKAGE)}
    assert {"__init__.py", "training/__init__.py", "training/regularizers/benign.py", "models.py"} <= files
    assert not any(f.startswith("reporting/") for f in files)

    root = package_copy(tmp_path)
    (root / "extra.py").write_text("X = 1\n")
    before = codes(root)
    append(root / "training" / "engines.py", "\n\ndef _late():\n    from oml_exp import extra\n    return extra.X\n")
    mid = codes(root)
    append(root / "extra.py", "Y = 2\n")  # reached only through the import inside a function
    assert changed(before, mid) == changed(mid, codes(root)) == {"finetune"}


def test_packaged_data_files_belong_to_the_stages_that_read_them(tmp_path):
    data = {stage: set(code["data"]) for stage, code in codes(provenance.PACKAGE).items()}
    assert "drift_prompts.json" in data["evaluate"] and "drift_prompts.json" not in data["finetune"]
    assert "benign_prompts.json" in data["finetune"] and "benign_prompts.json" not in data["evaluate"]
    assert {"train_templates.json", "heldout_templates.json"} <= data["check"]

    root = package_copy(tmp_path)
    before = codes(root)
    prompts = json.loads((root / "data" / "drift_prompts.json").read_text())
    (root / "data" / "drift_prompts.json").write_text(json.dumps(prompts[::-1]))
    assert changed(before, codes(root)) == {"evaluate"}
    before = codes(root)
    append(root / "data" / "benign_prompts.json", " ")
    assert changed(before, codes(root)) == {"finetune"}


def rewrite_same_size(path: Path) -> None:
    """New bytes of the same length with the old mtime: what a careless copy of other weights can leave behind."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_folder_digest_cache_is_used_but_never_vouches_for_changed_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("OML_EXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(provenance, "CACHED_FROM", 0)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (folder / ".hidden").write_text("not read by from_pretrained")
    first = provenance.folder_digest(folder)

    hashed = []
    real = provenance.file_digest
    monkeypatch.setattr(provenance, "file_digest", lambda p, n=16: hashed.append(p) or real(p, n))
    assert provenance.folder_digest(folder) == first and hashed == [], "an unchanged file is read from the cache"
    (folder / ".hidden").write_text("changed")
    assert provenance.folder_digest(folder) == first

    rewrite_same_size(folder / "weights.bin")
    assert provenance.folder_digest(folder) != first
    assert len(hashed) == 1


def test_hub_ids_are_named_by_the_commit_in_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    commit = "0123456789abcdef0123456789abcdef01234567"
    refs = tmp_path / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit)
    assert models.identity("org/model") == f"hub:org/model@{commit}"
    (refs / "main").write_text("f" * 40)
    assert models.identity("org/model") == f"hub:org/model@{'f' * 40}"
    assert provenance.hub_commit("org/other") == "main", "unknown offline: the revision itself"


def run(make_cfg, tmp_path, *overrides, name="run"):
    summary = pipeline.run(make_cfg(*FAST, *overrides), tmp_path / "runs" / name)
    return {stage: s["skipped"] for stage, s in summary["stages"].items()}


def test_a_stage_reruns_with_its_code_and_data_and_not_with_the_report(make_cfg, tmp_path, monkeypatch):
    root = package_copy(tmp_path)
    monkeypatch.setattr(provenance, "PACKAGE", root)
    first = run(make_cfg, tmp_path, "stages=[finetune,check,evaluate]")
    assert not any(first.values())

    append(root / "reporting" / "report.py", "\n# edited\n")
    assert all(run(make_cfg, tmp_path, "stages=[finetune,check,evaluate]", name="report").values())

    append(root / "training" / "finetune.py", "\n# edited\n")
    # check and evaluate read the new model (their upstream hash changed); the base model's scores stay shared
    assert run(make_cfg, tmp_path, "stages=[finetune,check,evaluate]", name="code") == {
        "generate": True, "finetune": False, "check": False, "evaluate_base": True, "evaluate": False}

    prompts = json.loads((root / "data" / "drift_prompts.json").read_text())
    (root / "data" / "drift_prompts.json").write_text(json.dumps(prompts[::-1]))
    assert run(make_cfg, tmp_path, "stages=[finetune,check,evaluate]", name="data") == {
        "generate": True, "finetune": True, "check": True, "evaluate_base": False, "evaluate": False}


def test_user_files_are_keyed_by_content(make_cfg, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("one benign line\nanother benign line\n")
    assert not any(run(make_cfg, tmp_path, "stages=[evaluate]", f"eval.drift_file={texts}").values())
    assert all(run(make_cfg, tmp_path, "stages=[evaluate]", f"eval.drift_file={texts}", name="same").values())
    texts.write_text("other text entirely\nand more of it\n")
    assert run(make_cfg, tmp_path, "stages=[evaluate]", f"eval.drift_file={texts}", name="edited") == {
        "evaluate_base": False}


def test_replaced_weights_in_a_model_folder_rerun_its_stages(make_cfg, tmp_path):
    folder = tmp_path / "suspect"
    shutil.copytree(models.resolve("tiny:llama"), folder)
    spec = [f"model.path={folder}", "stages=[generate,check]"]
    assert not any(run(make_cfg, tmp_path, *spec).values())
    assert all(run(make_cfg, tmp_path, *spec, name="same").values())

    model, _ = models.load(str(folder), device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    model.save_pretrained(folder)  # same files, same sizes, other weights
    assert run(make_cfg, tmp_path, *spec, name="replaced") == {"generate": False, "check": False}


def test_other_files_and_models_named_in_the_config_are_keyed_by_content(make_cfg, tmp_path):
    from oml_exp import checking
    from oml_exp.fingerprints import generate
    from oml_exp.training import finetune

    texts = tmp_path / "benign.jsonl"
    texts.write_text('"a benign text"\n')
    folder = tmp_path / "other_model"
    shutil.copytree(models.resolve("tiny:llama"), folder)
    cfg = make_cfg(*FAST, "regularizer=benign_mix", f"regularizer.benign_mix.source={texts}",
                   f"strategy.generator={folder}", f"check.false_positive_models=[base,{folder}]")
    keys = lambda: (finetune.key(cfg), generate.key(cfg), checking.key(cfg))  # noqa: E731
    before = keys()
    texts.write_text('"another benign text"\n')
    assert keys()[0] != before[0] and keys()[1:] == before[1:]
    before = keys()
    rewrite_same_size(folder / "model.safetensors")
    after = keys()
    assert after[0] == before[0] and after[1] != before[1] and after[2] != before[2]
