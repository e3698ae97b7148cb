"""Which lm-eval tasks an eval config runs, and those tasks built by lm-eval's own task loading.

A suite is a planner function here, named by its config file's `_target_` (conf/eval/*.yaml): it picks the task
specs of `eval.tasks` (an lm-eval task file, a pack folder, the metric that counts and a few-shot default) and the
data, and returns a Plan. A name outside the suite is any task lm-eval's TaskManager knows (its own, and those of the
YAML files under `eval.include_path`), run on its own data. Each task of a plan becomes a task file in a temporary
folder that includes the upstream file and overrides the task name, the few-shot count and, when a pack is used, the
data source (the pack's JSONL files in the same Hugging Face schema); lm-eval's TaskManager loads that folder
(`include_path`), so prompts, helpers and scoring are those of a stock lm-eval run.

Suites:
  local           zero-shot tasks on a local pack (the default; ../shared/benchmarks is such a pack)
  tinybenchmarks  lm-eval's tinyBenchmarks tasks as the reference system ran them: Hub data, IRT aggregation when
                  the tinyBenchmarks package is installed, else the plain mean (noted in the summary)
  openllm         the Open LLM Leaderboard (v1) tasks and few-shot counts on the full Hub datasets
The Hub suites take `eval.pack=FOLDER` to run on local files of the same schemas instead.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

REPO = Path(__file__).resolve().parents[2]
TEST_FILE = "test.jsonl"
FEWSHOT_FILE = "fewshot.jsonl"
IRT_PACKAGE = "tinyBenchmarks"
LOCAL_LOADERS = ("json", "csv", "parquet", "text", "arrow")  # Hugging Face's loaders of local data files


class EvalError(ValueError):
    """An eval config or pack that cannot be used; the message names the file, line or fix."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    upstream: str  # task file, relative to lm-eval's tasks folder (absolute for a task found by name)
    folder: Optional[str]  # pack folder holding test.jsonl (and fewshot.jsonl); None: the task's own data
    metric: str  # the metric whose per-item scores are paired
    fewshot: int = 0
    filter: str = "none"  # for generation tasks: the lm-eval filter whose score counts
    extra_fields: tuple = ()  # fields beyond the original schema (tinyMMLU's pre-rendered prompt)


def _suite(*specs: TaskSpec) -> dict[str, TaskSpec]:
    return {s.name: s for s in specs}


LOCAL = _suite(
    TaskSpec("hellaswag", "hellaswag/hellaswag.yaml", "hellaswag", "acc_norm"),
    TaskSpec("arc_easy", "arc/arc_easy.yaml", "arc_easy", "acc"),
    TaskSpec("arc_challenge", "arc/arc_challenge.yaml", "arc_challenge", "acc_norm"),
    TaskSpec("piqa", "piqa/piqa.yaml", "piqa", "acc_norm"),
    TaskSpec("winogrande", "winogrande/default.yaml", "winogrande", "acc"),
    TaskSpec("mmlu", "mmlu/default/_default_template_yaml", "mmlu", "acc"),
    TaskSpec("truthfulqa_mc1", "truthfulqa/truthfulqa_mc1.yaml", "truthfulqa", "acc"),
    TaskSpec("truthfulqa_mc2", "truthfulqa/truthfulqa_mc2.yaml", "truthfulqa", "acc"),
    TaskSpec("gsm8k", "gsm8k/gsm8k.yaml", "gsm8k", "exact_match", fewshot=5, filter="strict-match"),
)
TINYBENCHMARKS = _suite(
    TaskSpec("tinyArc", "tinyBenchmarks/tinyArc.yaml", "arc_challenge", "acc_norm", fewshot=25),
    TaskSpec("tinyHellaswag", "tinyBenchmarks/tinyHellaswag.yaml", "hellaswag", "acc_norm", fewshot=10),
    TaskSpec("tinyMMLU", "tinyBenchmarks/tinyMMLU.yaml", "mmlu", "acc_norm", extra_fields=(("input_formatted", str),)),
    TaskSpec("tinyWinogrande", "tinyBenchmarks/tinyWinogrande.yaml", "winogrande", "acc_norm", fewshot=5),
    TaskSpec("tinyTruthfulQA", "tinyBenchmarks/tinyTruthfulQA_mc2.yaml", "truthfulqa", "acc"),
    TaskSpec("tinyGSM8k", "tinyBenchmarks/tinyGSM8k.yaml", "gsm8k", "exact_match", fewshot=5, filter="strict-match"),
)
OPENLLM = _suite(
    TaskSpec("arc_challenge", "arc/arc_challenge.yaml", "arc_challenge", "acc_norm", fewshot=25),
    TaskSpec("hellaswag", "hellaswag/hellaswag.yaml", "hellaswag", "acc_norm", fewshot=10),
    TaskSpec("truthfulqa_mc2", "truthfulqa/truthfulqa_mc2.yaml", "truthfulqa", "acc"),
    TaskSpec("mmlu", "mmlu/default/_default_template_yaml", "mmlu", "acc", fewshot=5),
    TaskSpec("winogrande", "winogrande/default.yaml", "winogrande", "acc", fewshot=5),
    TaskSpec("gsm8k", "gsm8k/gsm8k.yaml", "gsm8k", "exact_match", fewshot=5, filter="strict-match"),
)

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
    return Path(spec.submodule_search_locations[0]).resolve() / "tasks"  # resolved, as lm-eval resolves task files


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
    """The plan of the suite `eval._target_` names (one of the three below)."""
    from hydra.utils import get_method

    return get_method(eval_cfg._target_)(eval_cfg)


def local(eval_cfg) -> Plan:
    """eval=local: the tasks on a local pack; no pack found = drift only."""
    return _on_pack(eval_cfg, LOCAL)


def openllm(eval_cfg) -> Plan:
    """eval=openllm: the Hub datasets, or a pack of the same schemas."""
    return _on_hub_or_pack(eval_cfg, OPENLLM, irt=False)


def tinybenchmarks(eval_cfg) -> Plan:
    """eval=tinybenchmarks: the Hub's curated items (IRT estimate when possible), or a pack of the same schemas."""
    return _on_hub_or_pack(eval_cfg, TINYBENCHMARKS, irt=eval_cfg.limit is None and irt_available())


def _on_hub_or_pack(eval_cfg, suite: dict[str, TaskSpec], irt: bool) -> Plan:
    if eval_cfg.pack is None:
        return Plan(eval_cfg.name, _specs(eval_cfg, suite), None, [], irt)
    return _on_pack(eval_cfg, suite)


def _on_pack(eval_cfg, suite: dict[str, TaskSpec]) -> Plan:
    specs = _specs(eval_cfg, suite)
    pack, looked = find_pack(eval_cfg.pack)
    unmeasured = [s.name for s in specs if s.folder is not None]
    if pack is None and unmeasured:
        own = [s for s in specs if s.folder is None]  # lm-eval's tasks bring their own data
        lost = f"{', '.join(unmeasured)} not measured" if own else "utility not measured, drift only"
        return Plan(eval_cfg.name, own, None, [f"no benchmark pack found (looked in {', '.join(looked)}): {lost}; "
                                               "set eval.pack=FOLDER or $OML_BENCHMARKS"])
    return Plan(eval_cfg.name, specs, pack, [])


def _specs(eval_cfg, suite: dict[str, TaskSpec]) -> list[TaskSpec]:
    return [suite[t] if t in suite else lm_eval_spec(t, eval_cfg, suite) for t in eval_cfg.tasks]


def lm_eval_spec(name: str, eval_cfg, suite: dict[str, TaskSpec]) -> TaskSpec:
    """A task outside the suite, as lm-eval indexes it: its own data, few-shot count and filter."""
    from lm_eval.tasks._index import Kind

    entry = task_index(eval_cfg.include_path).get(name)
    if entry is None:
        raise EvalError(f"eval.tasks: {name!r} is not an lm-eval task (nor one of suite {eval_cfg.name}'s: "
                        f"{', '.join(suite)}); see `lm-eval ls tasks`, or add its YAML with eval.include_path=FOLDER")
    if entry.kind not in (Kind.TASK, Kind.PY_TASK) or entry.yaml_path is None:
        raise EvalError(f"eval.tasks: {name!r} is an lm-eval {entry.kind.name.lower()}; name its tasks one by one "
                        f"(`lm-eval ls subtasks`), as each task's items are paired on their own")
    filters = entry.cfg.get("filter_list") or []
    return TaskSpec(name, str(entry.yaml_path), None, paired_metric(name, entry.cfg),
                    fewshot=entry.cfg.get("num_fewshot") or 0, filter=filters[0]["name"] if filters else "none")


@functools.lru_cache(maxsize=4)
def task_index(include_path: Optional[str]) -> dict:
    """lm-eval's index of its own tasks and those under include_path (seconds to build, so only for names outside the
    suite, once per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(Path(include_path).resolve()) if include_path else None).task_index


def paired_metric(name: str, cfg: dict) -> str:
    """The first of a task's metrics that lm-eval averages over items, so that item scores can be paired."""
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY, get_aggregation, get_metric_aggregation

    listed = cfg.get("metric_list") or [{"metric": m} for m in DEFAULT_METRIC_REGISTRY.get(cfg.get("output_type"), [])]
    mean = get_aggregation("mean")
    for m in listed:
        aggregation = m.get("aggregation")
        if aggregation == "mean" or (aggregation is None and get_metric_aggregation(m["metric"]) is mean):
            return m["metric"]
    raise EvalError(f"eval.tasks: {name!r} has no metric averaged over items (it has "
                    f"{', '.join(str(m['metric']) for m in listed) or 'none'}), which the paired statistics need; "
                    "choose another task")


def check(plan_: Plan, num_fewshot: Optional[int]) -> None:
    """Fail before any model is loaded when the plan's data cannot be read: every pack file the tasks read, checked
    line by line, the local files a task's own config loads, and the Hub datasets reachable (cached, when offline)."""
    for spec in plan_.specs:
        if on_pack(plan_, spec):
            for path in files(plan_, spec, plan_.fewshot(spec, num_fewshot)).values():
                validate(path, spec)
        else:
            require_data_files(spec)
    require_hub(plan_)


def require_data_files(spec: TaskSpec) -> None:
    for path in data_files(spec) or []:
        if not path.exists():
            raise EvalError(f"{path}: missing (task {spec.name} loads it: dataset_kwargs.data_files of "
                            f"{upstream_path(spec)})")


def on_pack(plan_: Plan, spec: TaskSpec) -> bool:
    return plan_.pack is not None and spec.folder is not None


def sources(plan_: Plan, spec: TaskSpec, num_fewshot: Optional[int]) -> list[Path]:
    """The local files a task's scores depend on beyond lm-eval: its pack files, or the user's task file (not the files
    it includes) and the data files it loads."""
    if on_pack(plan_, spec):
        return list(files(plan_, spec, plan_.fewshot(spec, num_fewshot)).values())
    own = [] if upstream_path(spec).is_relative_to(lm_eval_tasks()) else [upstream_path(spec)]
    return own + (data_files(spec) or [])


def data_files(spec: TaskSpec) -> Optional[list[Path]]:
    """The local files or folder a task's own config loads its data from; None for a Hub dataset."""
    cfg = read_upstream(spec)
    path = cfg.get("dataset_path")
    if path is None:
        return []  # a task class loads its own data: nothing to check from here
    if path in LOCAL_LOADERS:
        return [Path(f) for f in _strings((cfg.get("dataset_kwargs") or {}).get("data_files") or [])]
    return [Path(path)] if Path(path).expanduser().is_dir() else None


def _strings(value) -> list[str]:
    """The paths of a `data_files` value: one path, a list of them, or a dict of split to either."""
    if isinstance(value, str):
        return [value]
    return [s for v in (value.values() if isinstance(value, dict) else value) for s in _strings(v)]


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
    # Run from the repository root, the last two are one folder: name it once in the note.
    candidates = list({str(c.resolve()): c for c in candidates}.values())
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


def build(plan_: Plan, num_fewshot: Optional[int]) -> dict:
    """lm-eval's Task objects for the plan, by task name: each task's file is written into a temporary folder that
    lm-eval's TaskManager loads (reading the data as it builds each task, so the folder can go afterwards)."""
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="oml_lm_eval_") as folder:
        for spec in plan_.specs:
            cfg = task_file(plan_, spec, plan_.fewshot(spec, num_fewshot))
            (Path(folder) / f"{spec.name}.yaml").write_text(yaml.dump(cfg, Dumper=_Dumper, sort_keys=False))
        loaded = TaskManager(include_path=folder, include_defaults=False).load(
            [task_name(plan_, spec) for spec in plan_.specs])["tasks"]
    return {spec.name: loaded[task_name(plan_, spec)] for spec in plan_.specs}


def task_name(plan_: Plan, spec: TaskSpec) -> str:
    return f"oml_{plan_.suite}_{spec.name}"


def task_file(plan_: Plan, spec: TaskSpec, fewshot: int) -> dict:
    """One task's file: the upstream file included, with our task name and few-shot count, and the pack's files as its
    data when a pack is used."""
    upstream = read_upstream(spec)
    metrics = upstream.get("metric_list", [])
    cfg = {"task": task_name(plan_, spec), "num_fewshot": fewshot}
    if on_pack(plan_, spec):
        cfg.update(_local_data(upstream, files(plan_, spec, fewshot)))
    if plan_.irt or not any(_import_path(m.get("aggregation")) for m in metrics):
        return {"include": str(upstream_path(spec)), **_with_import_paths(cfg)}
    # tinyBenchmarks' IRT aggregation, where the plan has no IRT estimate: the plain mean. lm-eval imports every
    # helper a task file names as it reads the file, and that one needs a package that may be absent, so the file is
    # written out whole (lm-eval's own reading of it, helpers by import path) instead of being included.
    cfg["metric_list"] = [{**m, "aggregation": "mean"} for m in metrics]
    return _with_import_paths({**upstream, **cfg})


def read_upstream(spec: TaskSpec) -> dict:
    """The upstream task file as lm-eval reads it, includes merged and `!function` helpers left unimported."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(upstream_path(spec), resolve_func=False)


def upstream_path(spec: TaskSpec) -> Path:
    return (lm_eval_tasks() / spec.upstream).resolve()  # an absolute upstream stays as it is


def _local_data(upstream: dict, paths: dict[str, Path]) -> dict:
    split = upstream.get("test_split") or upstream.get("validation_split")
    data_files = {split: str(paths["test"])}
    shots = None
    if "fewshot" in paths:
        shots = upstream.get("fewshot_split") or upstream.get("training_split") or "train"
        data_files[shots] = str(paths["fewshot"])
    # Splits the pack does not provide must be unset, or lm-eval would look for them (or draw shots from the test set).
    return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": data_files},
            "test_split": split, "validation_split": None, "training_split": None, "fewshot_split": shots}


def irt_available() -> bool:
    return importlib.util.find_spec(IRT_PACKAGE) is not None


class _Helper(str):
    """A `!function` helper by import path, written into a task file as lm-eval's own task files name one."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Helper, lambda dumper, value: dumper.represent_scalar("!function", value))


def _import_path(value) -> Optional[str]:
    """A helper as lm-eval's unresolved reading gives it ("<its task folder>/<module>.<name>"), by import path
    ("lm_eval.tasks.<task folder>.<module>.<name>"), which lm-eval resolves from any folder; None for other values."""
    prefix = f"{lm_eval_tasks()}{os.sep}"
    if not isinstance(value, str) or not value.startswith(prefix):
        return None
    module, _, name = value[len(prefix):].rpartition(".")
    if not (lm_eval_tasks() / f"{module.replace('.', os.sep)}.py").is_file():
        return None
    return f"lm_eval.tasks.{module.replace(os.sep, '.')}.{name}"


def _with_import_paths(value):
    if isinstance(value, dict):
        return {k: _with_import_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_import_paths(v) for v in value]
    path = _import_path(value)
    return value if path is None else _Helper(path)


def hub_datasets(plan_: Plan) -> dict[TaskSpec, str]:
    """The Hub dataset of each task that reads one."""
    return {s: read_upstream(s)["dataset_path"] for s in plan_.specs if not on_pack(plan_, s) and data_files(s) is None}


def require_hub(plan_: Plan) -> None:
    """Fail at once, naming the local alternative, when Hub data cannot be had (instead of hanging on retries)."""
    lost = unreachable(hub_datasets(plan_))
    if lost:
        raise EvalError(f"eval={plan_.suite}: {', '.join(s.name for s in lost)} read "
                        f"{', '.join(sorted(set(lost.values())))} from the Hugging Face Hub, which cannot be reached "
                        f"from here (offline, not cached); {'; '.join(_local_alternatives(lost))}")


def unreachable(needed: dict[TaskSpec, str]) -> dict[TaskSpec, str]:
    """The tasks whose dataset cannot be had: not cached when offline, every one when the Hub does not answer."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return {s: d for s, d in needed.items() if not _in_hf_cache(d)}
    return {} if not needed or _hub_reachable() else needed


def _local_alternatives(lost: dict[TaskSpec, str]) -> list[str]:
    fixes = []
    if any(s.folder is not None for s in lost):
        fixes.append("for the suite's tasks use eval=local (a local JSONL pack such as ../shared/benchmarks), or keep "
                     "this suite and give eval.pack=FOLDER with files of the same schemas")
    if any(s.folder is None for s in lost):
        fixes.append("for lm-eval's own tasks give a task YAML reading local files (dataset_path: json, "
                     "dataset_kwargs.data_files) in eval.include_path")
    return fixes


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
