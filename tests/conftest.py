"""Shared fixtures: the real configs composed with Hydra's compose API into tmp paths, and the models."""

from __future__ import annotations

import os

# Tests never reach the network: everything comes from the cache, the embedded model and the repo's fixtures.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
# A developer's own pack must not change what eval.pack=auto finds in a test.
os.environ.pop("OML_BENCHMARKS", None)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from oml_exp import config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
# Beside the checkout in CI, absent on a fresh clone: only tests marked `benchmarks` may read it (see below).
BENCHMARKS = ROOT.parent / "shared" / "benchmarks"
# Made-up items in the same schemas, shipped with the repo: what end-to-end tests evaluate on.
PACK = ROOT / "tests" / "fixtures" / "eval_pack"
SMOLLM2 = "embedded:smollm2-135m-instruct"

config.register()
CLEAN_ENV = dict(os.environ)


def compose_config(overrides: list[str], output_dir: Path):
    """Compose conf/config.yaml as the CLI would, with every output under `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={output_dir}", *overrides])


def subprocess_env() -> dict:
    """The environment from before any test ran: in-process DeepSpeed runs leave rendezvous (RANK, MASTER_PORT) and
    accelerate variables behind, which would make a child process (a CLI run, a sweep) join a dead process group."""
    return dict(CLEAN_ENV)


def pytest_runtest_setup(item):
    if item.get_closest_marker("benchmarks") and not BENCHMARKS.is_dir():
        pytest.skip(f"needs the benchmark pack at {BENCHMARKS} (there in CI, absent on a fresh clone)")


@pytest.fixture(autouse=True)
def shared_pack_only_when_marked(request, monkeypatch):
    """A test that reaches ../shared/benchmarks through eval.pack=auto passes in CI and fails on a fresh clone, where
    the README's test command must pass too: fail it here unless it is marked `benchmarks`."""
    if request.node.get_closest_marker("benchmarks"):
        return
    from oml_exp.evaluation import tasks

    real = tasks.find_pack

    def find_pack(pack):
        found, looked = real(pack)
        if found is not None and BENCHMARKS.is_dir() and found == BENCHMARKS.resolve():
            pytest.fail(f"eval.pack={pack} found {BENCHMARKS}, absent on a fresh clone: give eval.pack={PACK} "
                        "(or null), or mark the test `benchmarks`")
        return found, looked

    monkeypatch.setattr(tasks, "find_pack", find_pack)


@pytest.fixture
def make_cfg(tmp_path):
    return lambda *overrides: compose_config(list(overrides), tmp_path)


@pytest.fixture
def tiny_cfg(make_cfg):
    """A checked config for the tiny model on the CPU, with these overrides."""
    def build(*overrides):
        cfg = make_cfg("model=tiny", "device=cpu", *overrides)
        config.validate(cfg)
        return cfg
    return build


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny model's tokenizer (no weights)."""
    from oml_exp import models

    return models.load_tokenizer("tiny:llama")


@pytest.fixture(scope="session")
def tiny():
    from oml_exp import models

    return models.load("tiny:llama", device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    """The one SmolLM2 load shared by the end-to-end tests."""
    from oml_exp import models

    return models.load(SMOLLM2, device="cpu")


def local_task(folder: Path, items: int = 3, data: Path | None = None) -> str:
    """A user's lm-eval task file in `folder`, loading yes/no questions from a local JSONL file (`items` of them
    written there, unless `data` names another file); returns its task name."""
    import json

    if data is None:
        data = folder / "yes_no.jsonl"
        data.write_text("".join(json.dumps({"question": f"Is {n} even?", "label": int(n % 2 == 0)}) + "\n"
                                for n in range(items)))
    (folder / "yes_no.yaml").write_text(f"""task: yes_no
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: ["no", "yes"]
doc_to_target: label
metric_list:
  - metric: acc
""")
    return "yes_no"
