"""Components from `_target_`: a new strategy is one module and one YAML file, nothing else."""

from __future__ import annotations

import json
import textwrap

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from oml_exp import components, config, preflight
from oml_exp.fingerprints import generate
from oml_exp.pipeline import Inputs
from tests.conftest import CONF

TOY = '''
from dataclasses import dataclass

from oml_exp.errors import require
from oml_exp.fingerprints.common import Strategy, pair_rows


@dataclass
class Counting(Strategy):
    """Key i is the token ids first, first + 1, ...; every response is one token."""

    name: str = "counting"
    first: int = 100
    response: int = 7

    def __post_init__(self):
        super().__post_init__()
        require(self.first >= 0, f"strategy.first must be >= 0, got {self.first}")

    def generate(self, ctx):
        n, length = ctx.pool, ctx.fp.key_length
        keys = [list(range(self.first + i * length, self.first + (i + 1) * length)) for i in range(n)]
        return pair_rows(ctx, [(ctx.tokenizer.decode(k), k) for k in keys], [[self.response]] * n)
'''


def test_a_new_strategy_is_one_module_and_one_yaml_file(tmp_path, monkeypatch):
    (tmp_path / "toy_strategy.py").write_text(TOY)
    (tmp_path / "conf" / "strategy").mkdir(parents=True)
    (tmp_path / "conf" / "strategy" / "counting.yaml").write_text(textwrap.dedent("""\
        # A toy strategy from a test, found through hydra.searchpath
        _target_: toy_strategy.Counting
        response: 9
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    config.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny", "strategy=counting", "strategy.first=50", "fingerprints.num=3",
                                           "fingerprints.key_length=4", f"paths.output_dir={tmp_path}",
                                           f"hydra.searchpath=[file://{tmp_path / 'conf'}]"])
    cfg = components.expanded(cfg)
    preflight.check_config(cfg)
    assert dict(cfg.strategy) == {"_target_": "toy_strategy.Counting", "name": "counting", "batch_size": 32,
                                  "first": 50, "response": 9}  # the class's defaults, the file's and the command's

    out = tmp_path / "gen"
    out.mkdir()
    summary = generate.run(cfg, Inputs(model=cfg.model.path, base_model=cfg.model.path), out)
    rows = json.loads((out / "fingerprints.json").read_text())
    assert summary["strategy"] == "counting" and summary["count"] == 3
    assert [r["key_ids"] for r in rows] == [[50, 51, 52, 53], [54, 55, 56, 57], [58, 59, 60, 61]]
    assert all(r["response_ids"] == [9] for r in rows)
    assert json.loads((out / "meta.json").read_text())["strategy"]["first"] == 50


def test_the_strategy_group_lists_no_internal_schema():
    options = sorted(p.stem for p in (CONF / "strategy").glob("*.yaml"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        listed = GlobalHydra.instance().config_loader().get_group_options("strategy")
    assert listed == options and not [o for o in listed if o.endswith("_schema")]
