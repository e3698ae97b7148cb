"""Which lm-eval tasks an eval config runs, built as task dicts from lm-eval's own task files.

Each suite (`eval.name`) names tasks by an lm-eval task file, a pack folder, the metric that counts and a few-shot
default. A task dict is that upstream file (includes merged, `!function` helpers imported from beside it) with the
few-shot count, the one metric and, when a pack is used, the data source swapped for local JSONL files in the same
Hugging Face schema. Building from the upstream files keeps prompts and scoring identical to a stock lm-eval run.

Suites:
  local           zero-shot tasks on a local pack (the default; ../shared/benchmarks is such a pack)
  tinybenchmarks  lm-eval's tinyBenchmarks tasks as the reference system ran them: Hub data, IRT aggregation when
                  the tinyBenchmarks package is installed, else the plain mean (noted in the summary)
  openllm         the Open LLM Leaderboard (v1) tasks and few-shot counts on the full Hub datasets
The Hub suites take `eval.pack=FOLDER` to run on local files of the same schemas instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

REPO = Path(__file__).resolve().parents[2]
TEST_FILE = "test.jsonl"
FEWSHOT_FILE = "fewshot.jsonl"
IRT_PACKAGE = "tinyBenchmarks"


class EvalError(ValueError):
    """An eval config or pack that cannot be used; the message names the file, line or fix."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    upstream: str  # task file, relative to lm-eval's tasks folder
    folder: str  # pack folder holding test.jsonl (and fewshot.jsonl)
    metric: str
    fewshot: int = 0
    filter: str = "none"  # for generation tasks: the lm-eval filter whose score counts
    extra_fields: tuple = ()  # fields beyond the original schema (tinyMMLU's pre-rendered prompt)


def _suite(*specs: TaskSpec) -> dict[str, TaskSpec]:
    return {s.name: s for s in specs}


SUITES = {
    "local": _suite(
        TaskSpec("hellaswag", "hellaswag/hellaswag.yaml", "hellaswag", "acc_norm"),
        TaskSpec("arc_easy", "arc/arc_easy.yaml", "arc_easy", "acc"),
        TaskSpec("arc_challenge", "arc/arc_challenge.yaml", "arc_challenge", "acc_norm"),
        TaskSpec("piqa", "piqa/piqa.yaml", "piqa", "acc_norm"),
        TaskSpec("winogrande", "winogrande/default.yaml", "winogrande", "acc"),
        TaskSpec("mmlu", "mmlu/default/_default_template_yaml", "mmlu", "acc"),
        TaskSpec("truthfulqa_mc1", "truthfulqa/truthfulqa_mc1.yaml", "truthfulqa", "acc"),
        TaskSpec("truthfulqa_mc2", "truthfulqa/truthfulqa_mc2.yaml", "truthfulqa", "acc"),
        TaskSpec("gsm8k", "gsm8k/gsm8k.yaml", "gsm8k", "exact_match", fewshot=5, filter="strict-match"),
    ),
    "tinybenchmarks": _suite(
        TaskSpec("tinyArc", "tinyBenchmarks/tinyArc.yaml", "arc_challenge", "acc_norm", fewshot=25),
        TaskSpec("tinyHellaswag", "tinyBenchmarks/tinyHellaswag.yaml", "hellaswag", "acc_norm", fewshot=10),
        TaskSpec("tinyMMLU", "tinyBenchmarks/tinyMMLU.yaml", "mmlu", "acc_norm",
                 extra_fields=(("input_formatted", str),)),
        TaskSpec("tinyWinogrande", "tinyBenchmarks/tinyWinogrande.yaml", "winogrande", "acc_norm", fewshot=5),
        TaskSpec("tinyTruthfulQA", "tinyBenchmarks/tinyTruthfulQA_mc2.yaml", "truthfulqa", "acc"),
        TaskSpec("tinyGSM8k", "tinyBenchmarks/tinyGSM8k.yaml", "gsm8k", "exact_match", fewshot=5,
                 filter="strict-match"),
    ),
    "openllm": _suite(
        TaskSpec("arc_challenge", "arc/arc_challenge.yaml", "arc_challenge", "acc_norm", fewshot=25),
        TaskSpec("hellaswag", "hellaswag/hellaswag.yaml", "hellaswag", "acc_norm", fewshot=10),
        TaskSpec("truthfulqa_mc2", "truthfulqa/truthfulqa_mc2.yaml", "truthfulqa", "acc"),
        TaskSpec("mmlu", "mmlu/default/_default_template_yaml", "mmlu", "acc", fewshot=5),
        TaskSpec("winogrande", "winogrande/default.yaml", "winogrande", "acc", fewshot=5),
        TaskSpec("gsm8k", "gsm8k/gsm8k.yaml", "gsm8k", "exact_match", fewshot=5, filter="strict-match"),
    ),
}
# Suites whose data lives on the Hugging Face Hub unless eval.pack points at local files.
HUB_SUITES = ("tinybenchmarks", "openllm")

# The fields (and types) each pack folder's items need: those of the Hugging Face dataset lm-eval loads.
SCHEMAS = {
    "arc": {"question": str, "choices": dict, "answerKey": str},
    "hellaswag": {"activity_label": str, "ctx_a": str, "ctx_b": str, "endings": list, "label": (str, int)},
    "piqa": {"goal": str, "sol1": str, "sol2": str, "label": int},
    "winogrande": {"sentence": str, "option1": str, "option2": str, "answer": str},
    "mmlu": {"question": str, "choices": list, "answer": int},
    "truthfulqa": {"question": str, "mc1_targets": dict, "mc2_targets": dict},
    "gsm8k": {"question": str, "answer": str},
}


def lm_eval_tasks() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    return Path(spec.submodule_search_locations[0]) / "tasks"


@dataclass
class Plan:
    """What one evaluation runs: the task specs, the pack (None = Hub data or no benchmarks) and why."""

    suite: str
    specs: list[TaskSpec]
    pack: Optional[Path]
    notes: list[str]
    # tinyBenchmarks' IRT estimate: only on its own 100 curated items (Hub data, no limit) with its package installed.
    irt: bool = False

    def fewshot(self, spec: TaskSpec, override: Optional[int]) -> int:
        return spec.fewshot if override is None else override


def plan(eval_cfg) -> Plan:
    if eval_cfg.name not in SUITES:
        raise EvalError(f"eval.name={eval_cfg.name!r} is not a suite; choose from {list(SUITES)}")
    suite = SUITES[eval_cfg.name]
    unknown = [t for t in eval_cfg.tasks if t not in suite]
    if unknown:
        raise EvalError(f"eval.tasks: {unknown} not in suite {eval_cfg.name!r}; known: {list(suite)}")
    specs = [suite[t] for t in eval_cfg.tasks]
    if eval_cfg.name in HUB_SUITES and eval_cfg.pack is None:
        irt = eval_cfg.name == "tinybenchmarks" and eval_cfg.limit is None and irt_available()
        return Plan(eval_cfg.name, specs, None, [], irt)
    pack, looked = find_pack(eval_cfg.pack)
    if pack is None:
        return Plan(eval_cfg.name, [], None, [f"no benchmark pack found (looked in {', '.join(looked)}): utility "
                                              "not measured, drift only; set eval.pack=FOLDER or $OML_BENCHMARKS"])
    return Plan(eval_cfg.name, specs, pack, [])


def check(plan_: Plan, num_fewshot: Optional[int]) -> None:
    """Fail before any model is loaded when the plan's data cannot be read: every pack file the tasks read, checked
    line by line, or the Hub datasets reachable (cached, when offline)."""
    if plan_.pack is None:
        if plan_.specs:
            require_hub(plan_)
        return
    for spec in plan_.specs:
        for path in files(plan_, spec, plan_.fewshot(spec, num_fewshot)).values():
            validate(path, spec)


def find_pack(pack: Optional[str]) -> tuple[Optional[Path], list[str]]:
    """The pack folder and the places looked at. "auto": $OML_BENCHMARKS, then ../shared/benchmarks relative to the
    working directory and to the repository root."""
    if pack is None:
        return None, ["nowhere (eval.pack=null)"]
    if pack != "auto":
        folder = Path(pack).expanduser().resolve()
        if not folder.is_dir():
            raise EvalError(f"eval.pack={pack}: no such folder")
        return folder, [str(folder)]
    candidates = [Path(os.environ["OML_BENCHMARKS"])] if os.environ.get("OML_BENCHMARKS") else []
    candidates += [Path.cwd() / ".." / "shared" / "benchmarks", REPO / ".." / "shared" / "benchmarks"]
    for folder in candidates:
        if folder.is_dir():
            return folder.resolve(), [str(c) for c in candidates]
    return None, [str(c) for c in candidates]


def files(plan_: Plan, spec: TaskSpec, fewshot: int) -> dict[str, Path]:
    """The pack files a task reads: its test items, and its few-shot pool when it takes shots."""
    folder = plan_.pack / spec.folder
    out = {"test": folder / TEST_FILE}
    if fewshot:
        out["fewshot"] = folder / FEWSHOT_FILE
    return out


def validate(path: Path, spec: TaskSpec) -> None:
    """Check that every line of a pack file is a JSON object with the task's fields; name the file and line if not."""
    if not path.is_file():
        raise EvalError(f"{path}: missing (task {spec.name} needs it; the layout is <task>/test.jsonl and "
                        "<task>/fewshot.jsonl, as in ../shared/benchmarks)")
    fields = {**SCHEMAS[schema_name(spec.folder)], **dict(spec.extra_fields)}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise EvalError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(item, dict):
                raise EvalError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
            wrong = [f"{k} ({_type_names(t)})" for k, t in fields.items() if not isinstance(item.get(k), t)]
            if wrong:
                raise EvalError(f"{path}:{number}: not the {spec.folder} schema: "
                                f"missing or mistyped {', '.join(wrong)}")


def schema_name(folder: str) -> str:
    return "arc" if folder.startswith("arc") else folder


def _type_names(t) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def task_config(plan_: Plan, spec: TaskSpec, fewshot: int) -> dict:
    """The lm-eval task dict for one task: the upstream file, our few-shot count and metric, local data if a pack."""
    cfg = load_upstream(lm_eval_tasks() / spec.upstream)
    for grouping in ("tag", "group", "task_alias"):
        cfg.pop(grouping, None)
    cfg["task"] = f"oml_{plan_.suite}_{spec.name}"
    cfg["num_fewshot"] = fewshot
    cfg["metric_list"] = [_metric(m, plan_.irt) for m in cfg["metric_list"] if m["metric"] == spec.metric]
    if plan_.pack is not None:
        _use_local_files(cfg, files(plan_, spec, fewshot))
    return resolve_functions(cfg)


def _metric(entry: dict, irt: bool) -> dict:
    """tinyBenchmarks' IRT aggregation where the plan allows it; the plain mean otherwise."""
    if isinstance(entry.get("aggregation"), FunctionRef) and not irt:
        return {**entry, "aggregation": "mean"}
    return entry


def irt_available() -> bool:
    return importlib.util.find_spec(IRT_PACKAGE) is not None


def _use_local_files(cfg: dict, paths: dict[str, Path]) -> None:
    split = cfg.get("test_split") or cfg.get("validation_split")
    data_files = {split: str(paths["test"])}
    shots = None
    if "fewshot" in paths:
        shots = cfg.get("fewshot_split") or cfg.get("training_split") or "train"
        data_files[shots] = str(paths["fewshot"])
    # Splits the pack does not provide must be unset, or lm-eval would look for them (or draw shots from the test set).
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": data_files}, test_split=split,
               validation_split=None, training_split=None, fewshot_split=shots)


def hub_datasets(plan_: Plan) -> list[str]:
    return sorted({load_upstream(lm_eval_tasks() / s.upstream)["dataset_path"] for s in plan_.specs})


def require_hub(plan_: Plan) -> None:
    """Fail at once, naming the local alternative, when Hub data cannot be had (instead of hanging on retries)."""
    datasets_ = hub_datasets(plan_)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    missing = [d for d in datasets_ if not _in_hf_cache(d)] if offline else ([] if _hub_reachable() else datasets_)
    if missing:
        raise EvalError(f"eval={plan_.suite} reads {', '.join(missing)} from the Hugging Face Hub, which cannot be "
                        "reached from here (offline, not cached). Use eval=local (a local JSONL pack such as "
                        "../shared/benchmarks), or keep this suite and give eval.pack=FOLDER with files of the same "
                        "schemas")


def _in_hf_cache(dataset: str) -> bool:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE", home / "hub")) / f"datasets--{dataset.replace('/', '--')}"
    built = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")) / dataset.replace("/", "___")
    return hub.is_dir() or built.is_dir()


def _hub_reachable(timeout: float = 5.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# --- reading lm-eval's task files without importing every helper they name -------------------------------------


@dataclass(frozen=True)
class FunctionRef:
    """A `!function module.name` reference, imported only when used (tinyBenchmarks' aggregations need a package
    that may be absent)."""

    folder: Path
    qualname: str

    def load(self) -> Any:
        module_name, _, attr = self.qualname.rpartition(".")
        path = self.folder / f"{module_name.replace('.', '/')}.py"
        spec = importlib.util.spec_from_file_location(f"oml_lm_eval_{self.folder.name}_{module_name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, attr)


def load_upstream(path: Path) -> dict:
    """A task file with its `include`s merged (the including file wins), as lm-eval reads it."""
    path = Path(path)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: FunctionRef(path.parent, loader.construct_scalar(node)))
    cfg = yaml.load(path.read_text(), Loader=Loader)  # noqa: S506 - SafeLoader plus one tag
    merged: dict = {}
    for include in _as_list(cfg.pop("include", [])):
        merged.update(load_upstream(path.parent / include))
    merged.update(cfg)
    return merged


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def resolve_functions(value):
    if isinstance(value, FunctionRef):
        return value.load()
    if isinstance(value, dict):
        return {k: resolve_functions(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_functions(v) for v in value]
    return value
