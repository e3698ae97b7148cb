"""The sweep report on fixture run summaries: the table, the plots drawn from its CSV, W&B without keys, the CLI."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from oml_exp.reporting import persistence
from oml_exp.reporting.__main__ import main as report_main
from oml_exp.reporting.intervals import RATES, wilson
from oml_exp.reporting.plots import PANELS, plot_capacity, plot_system_prompts, plot_tradeoff
from oml_exp.reporting.sweep import CSV
from oml_exp.reporting.sweep import run as sweep_report
from oml_exp.reporting.table import AXES, collect, conditions, series_columns

# Planted in every free-text field of the fixtures: the report must copy named numbers, never text it was not asked for.
KEY = "zebra quantum marmalade 7731"
TASKS = ("arc_easy", "piqa")


def fake_summary(strategy="perinucleus", num=16, seed=0, regularizer=None, augmentation="none", model="smollm2_135m",
                 success=1.0, heldout=0.5, retention=0.98) -> dict:
    """A run summary shaped as oml_exp/reporting/report.py writes it."""
    regularizer = regularizer or {}
    tag = f"{strategy}-{num}-{seed}-{json.dumps(regularizer, sort_keys=True)}-{augmentation}-{model}"
    tasks = {t: {"metric": "acc", "n": 50, "base": 0.5, "fingerprinted": 0.5 * retention, "retention": retention,
                 "ci_low": retention - 0.02, "ci_high": retention + 0.02, "mcnemar_p": 1.0} for t in TASKS}
    # A task at zero for the base model has no retention; it must not poison the mean.
    tasks["hellaswag"] = {"metric": "acc_norm", "n": 50, "base": 0.0, "fingerprinted": 0.0, "retention": math.nan,
                          "ci_low": math.nan, "ci_high": math.nan}
    check = {"success_rate": success, "token_accuracy": success, "chat_template": False, "notes": [KEY],
             "sets": {"raw/heldout": {"templates": 10, "mean": heldout, "min": 0.0, "max": 1.0},
                      "chat/heldout": {"templates": 10, "mean": 0.0, "min": 0.0, "max": 0.0}},
             "false_positives": {"base": {"success_rate": 0.01, "model": KEY}}}
    stages = {name: {"folder": f"/store/{name}/{tag}", "hash": f"{name}-{tag}", "skipped": False, "seconds": 1.0,
                     "summary": check if name == "check" else {"note": KEY}}
              for name in ("generate", "finetune", "check", "evaluate_base", "evaluate")}
    return {"model": f"embedded:{model}", "strategy": strategy, "fingerprints": num,
            "headline": {"success_rate": success, "token_accuracy": success, "train_steps": 5, "tasks": tasks,
                         "drift": {"top1_agreement": 0.99, "kl": 0.01}, "note": KEY},
            "stages": stages,
            "config": {"model": {"name": model, "path": f"embedded:{model}"}, "strategy": {"name": strategy},
                       "regularizer": regularizer, "augmentation": {"name": augmentation, "fraction": 0.8},
                       "fingerprints": {"num": num, "seed": seed, "pool_size": 64, "file": None},
                       "train": {"lr": 3e-4}, "seed": seed, "paths": {"output_dir": f"/tmp/{seed}"},
                       "logger": {"name": "wandb", "group": None}, "stages": ["generate", "report"]}}


def write_run(root: Path, name: str, summary: dict) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A scalability sweep: 2 strategies x 2 regularizers x 3 counts x 2 seeds, success and retention falling with N."""
    root = tmp_path / "sweep"
    for strategy in ("perinucleus", "random_word"):
        for reg in ({}, {"averaging": {"name": "averaging", "strength": 0.75, "every": None}}):
            for num in (4, 16, 64):
                for seed in (0, 1):
                    drop = math.log2(num) / 100 * (2 if strategy == "random_word" else 1) * (0.5 if reg else 1)
                    summary = fake_summary(strategy, num, seed, reg, success=1 - drop - seed / 50,
                                           retention=1 - drop + seed / 100)
                    write_run(root, f"{strategy}_{len(reg)}_{num}_{seed}", summary)
    # A stage folder's summary.json beside the runs: not a run, never a row.
    (root / "stages" / "check" / "abc").mkdir(parents=True)
    (root / "stages" / "check" / "abc" / "summary.json").write_text(json.dumps({"success_rate": 0.0}))
    return root


def test_collect_one_row_per_run_with_axes_and_metrics(sweep):
    table = collect(sweep)
    assert len(table) == 24
    assert set(table["regularizer"]) == {"none", "averaging"}
    assert set(table["fingerprints"]) == {4, 16, 64}
    row = table[(table.strategy == "random_word") & (table.fingerprints == 16) & (table.seed == 1)
                & (table.regularizer == "none")].iloc[0]
    assert row["success_rate"] == pytest.approx(1 - 0.08 - 0.02)
    assert row["mean_retention"] == pytest.approx(1 - 0.08 + 0.01)
    assert row["utility"] == pytest.approx((0 + 2 * 0.5 * (1 - 0.08 + 0.01)) / 3)
    assert row["retention_piqa_lo"] == pytest.approx(row["retention_piqa"] - 0.02)
    assert row["heldout_success"] == 0.5  # the raw-mode held-out set: these fingerprints were trained without chat
    assert row["false_positive_rate"] == 0.01
    assert row["drift_top1"] == 0.99
    # Settings that differ only with the seed or the output folder are not axes; nothing else varied here.
    assert conditions(table) == AXES
    # Every setting is a column, constant and empty ones too; the seed once.
    assert {"train.lr", "augmentation.fraction", "fingerprints.file", "fingerprints.seed", "paths.output_dir"} <= set(
        table.columns)
    assert set(table["train.lr"]) == {3e-4} and table["fingerprints.file"].isna().all()
    assert list(table.columns).count("seed") == 1


def test_varying_config_keys_become_axes_and_reruns_count_once(tmp_path):
    root = tmp_path / "lr"
    for lr in (1e-4, 3e-4):
        summary = fake_summary()
        summary["config"]["train"]["lr"] = lr
        for stage in summary["stages"].values():
            stage["hash"] += str(lr)
        write_run(root, f"lr{lr}", summary)
    write_run(root, "lr0.0003-rerun", summary)  # the same stage outputs again: the same experiment
    table = collect(root)
    assert sorted(table["train.lr"]) == [1e-4, 3e-4]
    assert series_columns(table) == ["train.lr"]


def test_regularizer_lists_and_swept_parameters(tmp_path):
    root = tmp_path / "reg"
    for name, reg in [("none", {}), ("avg50", {"averaging": {"name": "averaging", "strength": 0.5}}),
                      ("avg75", {"averaging": {"name": "averaging", "strength": 0.75}}),
                      ("mix", {"averaging": {"name": "averaging", "strength": 0.75},
                               "benign_mix": {"name": "benign_mix", "fraction": 0.25}})]:
        write_run(root, name, fake_summary(regularizer=reg))
    table = collect(root)
    assert list(table["regularizer"]) == ["averaging", "averaging", "averaging+benign_mix", "none"]
    # The strength varies among averaging runs: an axis. The mixing fraction and the augmentation's fraction
    # follow from the choice's name: not axes.
    assert [c for c in conditions(table) if "." in c] == ["regularizer.averaging.strength"]
    assert list(table["regularizer.averaging.strength"].iloc[:2]) == [0.5, 0.75]


def test_the_csv_keeps_counts_and_never_a_credential(tmp_path):
    summary = fake_summary()
    summary["config"]["verify"] = {"url": "https://ann-user:hunter2@api.example.com:8443/v1?api_key=sk-query-1",
                                   "api_key_env": "OPENAI_API_KEY", "api_key": "sk-live-1", "num": 16}
    summary["config"]["fingerprints"]["key_length"] = 16
    summary["config"]["strategy"].update(key_strategy="english", keys_file="/keys.json", responses_per_key=2,
                                         batch_tokens=None, hub_token="hf-abc-1", client_secret="cs-1",
                                         password="pw-1")
    write_run(tmp_path / "runs", "0", summary)
    sweep_report(tmp_path / "runs", tmp_path / "report")
    csv = (tmp_path / "report" / CSV).read_text()
    assert not [s for s in ("hunter2", "ann-user", "sk-query-1", "sk-live-1", "hf-abc-1", "cs-1", "pw-1") if s in csv]
    row = pd.read_csv(tmp_path / "report" / CSV).iloc[0]
    assert row["verify.url"] == "https://api.example.com:8443/v1"
    assert row["fingerprints.key_length"] == 16 and row["strategy.responses_per_key"] == 2
    assert row["strategy.key_strategy"] == "english" and row["strategy.keys_file"] == "/keys.json"
    assert row["verify.api_key_env"] == "OPENAI_API_KEY" and row["verify.num"] == 16
    assert "strategy.batch_tokens" in row.index
    for dropped in ("verify.api_key", "strategy.hub_token", "strategy.client_secret", "strategy.password"):
        assert dropped not in row.index


def _intervals(container) -> list[float]:
    """An error bar container's low and high end of each point, in a row."""
    return [y for seg in container.lines[2][0].get_segments() for y in (seg[0][1], seg[1][1])]


def _flat(pairs) -> list[float]:
    return [y for pair in pairs for y in pair]


def test_plots_show_what_the_csv_says(sweep, tmp_path):
    files = sweep_report(sweep, tmp_path / "report")
    csv = pd.read_csv(files["csv"])
    fig = plot_tradeoff(files["csv"], tmp_path / "again.png")
    titles = dict(PANELS)
    checked = 0
    for ax in fig.axes:
        metric = next(m for m, t in titles.items() if t == ax.get_title())
        assert ax.get_xlabel() == "fingerprints (count, log scale)" and "(" in ax.get_ylabel(), "a unit on each axis"
        for container in ax.containers:
            strategy, regularizer = container.get_label().split(", ")
            part = csv[(csv.strategy == strategy) & (csv.regularizer == regularizer)]
            expected = part.groupby("fingerprints")[metric].agg(["mean", "std"])
            line = container.lines[0]
            # Series are nudged sideways on the log axis so that equal values stay visible, never past a neighbour.
            assert [x / n for x, n in zip(line.get_xdata(), expected.index)] == pytest.approx([1.0] * 3, rel=0.15)
            assert list(line.get_ydata()) == pytest.approx(list(expected["mean"]))
            if metric in RATES:  # Wilson over the fingerprints of both seeds
                bounds = [wilson(m, 2 * n) for m, n in zip(expected["mean"], expected.index)]
            else:  # two seeds: mean ± sd, clipped to what the quantity can be
                bounds = [(m - sd, min(m + sd, 1.0) if metric == "drift_top1" else m + sd)
                          for m, sd in zip(expected["mean"], expected["std"])]
            assert _intervals(container) == pytest.approx(_flat(bounds), abs=1e-4)
            checked += 1
    assert checked == 4 * 4  # 4 panels (success, held-out, retention, drift) x 4 series
    (legend,) = fig.legends  # one legend for the figure, none in a panel
    assert not any(ax.get_legend() for ax in fig.axes)
    assert [t.get_text() for t in legend.get_texts()][:2] == ["perinucleus, none", "perinucleus, averaging"]
    assert files["tradeoff"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["tradeoff"].with_suffix(".pdf").read_bytes()[:5] == b"%PDF-", "a vector copy beside the PNG"
    assert "system_prompts" not in files, "no augmentation axis here: no system-prompt table"


CAPACITY = [{"model": "smollm2_135m", "strategy": "perinucleus", "augmentation": "none", "seed": 0, "fingerprints": n,
             "regularizer": reg, "success_rate": 1.0, "heldout_success": 0.2, "chat_success": 0.0,
             "mean_retention": r, "mean_retention_lo": r - 0.03, "mean_retention_hi": r + 0.02, "drift_top1": 0.86,
             "train_steps": n // 8} for n, r in ((64, 1.01), (1024, 0.99)) for reg in ("averaging", "none")]


def test_the_capacity_plot_draws_retention_with_its_interval_per_regularizer(tmp_path):
    csv = tmp_path / "runs.csv"
    pd.DataFrame(CAPACITY).to_csv(csv, index=False)
    fig = plot_capacity(csv, tmp_path / "capacity.png")
    retention = [c for c in fig.axes[1].containers if isinstance(c, ErrorbarContainer)]
    assert [c.get_label() for c in retention] == ["none", "averaging"]  # the baseline first
    assert _intervals(retention[0]) == pytest.approx([0.98, 1.03, 0.96, 1.01])  # one seed: the run's own interval
    assert (tmp_path / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one_count = pd.DataFrame([r for r in CAPACITY if r["fingerprints"] == 64])
    one_count.to_csv(csv, index=False)
    assert plot_capacity(csv, tmp_path / "none.png") is None


def test_rate_intervals_stay_within_0_and_1_and_every_axis_has_a_unit(tmp_path):
    csv = tmp_path / "runs.csv"
    pd.DataFrame(CAPACITY).to_csv(csv, index=False)
    fig = plot_capacity(csv, tmp_path / "capacity.png")
    success = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(success) == 3 * 2, "three framings for each regularizer"
    ends = [y for c in success for y in _intervals(c)]
    assert 0.0 in ends and 1.0 in ends, "success at 0% and 100%: intervals reach the bounds"
    assert all(0.0 <= y <= 1.0 for y in ends)
    assert _intervals(success[0]) == pytest.approx(_flat([wilson(1.0, 64), wilson(1.0, 1024)]))
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    assert (tmp_path / "capacity.pdf").read_bytes()[:5] == b"%PDF-"


def test_one_fingerprint_count_gets_one_bar_per_setting(tmp_path):
    # A regularizer comparison: one count, settings side by side from zero, each bar the seed mean with its interval.
    root = tmp_path / "regularizers"
    settings = {"none": {}, "averaging": {"averaging": {"name": "averaging", "strength": 0.05}},
                "averaging+benign_mix": {"averaging": {"name": "averaging", "strength": 0.05},
                                         "benign_mix": {"name": "benign_mix", "fraction": 0.25}}}
    for i, (name, reg) in enumerate(settings.items()):
        for seed in (0, 1):
            write_run(root, f"{name}{seed}", fake_summary(num=64, seed=seed, regularizer=reg,
                                                         success=0.9 - i / 10 - seed / 20, retention=0.9 + i / 20))
    files = sweep_report(root, tmp_path / "out")
    csv = pd.read_csv(files["csv"])
    fig = plot_tradeoff(files["csv"], tmp_path / "again.png")
    success = next(ax for ax in fig.axes if ax.get_title() == dict(PANELS)["success_rate"])
    labels = [t.get_text() for t in success.get_xticklabels()]
    assert labels == list(settings), "the baseline first"
    assert success.get_ylim()[0] == 0, "bars start from zero"
    expected = csv.groupby("regularizer")["success_rate"].mean()
    assert [p.get_height() for p in success.patches] == pytest.approx([expected[name] for name in labels])
    errorbars = [c for c in success.containers if isinstance(c, ErrorbarContainer)]
    bounds = [y for c in errorbars for y in _intervals(c)]
    assert bounds == pytest.approx(_flat(wilson(expected[name], 128) for name in labels), abs=1e-4)


ATTACKS = {"prune": ("prune", "fraction", 0.2, 0.75), "sft": ("sft", "tokens", 1000, 0.25)}


def write_attacked(root: Path) -> None:
    """One run per attack in ATTACKS (16 fingerprints, all recalled before the attack) beside the sweep's runs."""
    for i, (name, (kind, measure, value, success)) in enumerate(ATTACKS.items()):
        summary = fake_summary(num=16, seed=0, success=1.0)
        summary["headline"]["attacks"] = {name: {
            "kind": kind, "strength": {"measure": measure, "value": value}, "success_rate": success,
            "heldout_success_rate": success / 2, "mean": {"retention": 0.97}, "drift": {"top1_agreement": 0.9}}}
        summary["stages"][f"attack/{name}"] = {"hash": f"attack-{name}", "folder": "/store", "skipped": False,
                                               "seconds": 1.0, "summary": {"note": KEY}}
        write_run(root, f"attacked{i}", summary)


def test_a_committed_report_is_redrawn_from_its_csvs(sweep, tmp_path):
    # A report folder as docs/results/NAME holds it: the CSVs, no run folders.
    write_attacked(sweep)
    sweep_report(sweep, tmp_path / "made")
    committed = tmp_path / "committed"
    committed.mkdir()
    for name in (CSV, "persistence.csv"):
        (committed / name).write_bytes((tmp_path / "made" / name).read_bytes())
    before = {p.name: p.read_bytes() for p in committed.iterdir()}
    report_main([str(committed)])
    assert {p.name: p.read_bytes() for p in committed.glob("*.csv")} == before, "the numbers are never rewritten"
    for figure in ("tradeoff", "persistence"):
        assert (committed / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
        assert (committed / f"{figure}.pdf").read_bytes()[:5] == b"%PDF-"
    text = (committed / "report.md").read_text()
    assert "## Persistence" in text and "| prune | prune | fraction 0.2 |" in text
    assert text.startswith("# Sweep report: committed\n")
    assert (tmp_path / "made" / "report.md").read_text().split("\n", 1)[1] == text.split("\n", 1)[1]


def test_the_persistence_plot_starts_each_line_before_the_attack(sweep, tmp_path):
    write_attacked(sweep)
    files = sweep_report(sweep, tmp_path / "report")
    fig = persistence.plot(pd.read_csv(files["persistence_csv"]), tmp_path / "p.png")
    prune = next(ax for ax in fig.axes if ax.get_title() == "prune")
    assert [t.get_text() for t in prune.get_xticklabels()] == ["before", "0.2"]
    (line,) = prune.containers
    assert _intervals(line) == pytest.approx(_flat([wilson(1.0, 16), wilson(0.75, 16)]), abs=1e-4)
    assert prune.get_ylabel() == "success (% of fingerprints)"
    assert len(fig.legends) == 1 and (tmp_path / "p.pdf").exists()


def test_markdown_lists_each_runs_retention_with_its_interval(sweep, tmp_path):
    text = sweep_report(sweep, tmp_path / "report")["markdown"].read_text()
    section = text.split("## Utility retention per task")[1].split("## Runs")[0]
    table = pd.read_csv(tmp_path / "report" / CSV)
    first = table.iloc[0]
    assert f"{first.retention_piqa:.3f} [{first.retention_piqa_lo:.2f}, {first.retention_piqa_hi:.2f}]" in section
    assert section.count("\n| ") == len(table) + 1, "a header and one row per run"


def test_markdown_tables(sweep, tmp_path):
    text = sweep_report(sweep, tmp_path / "report")["markdown"].read_text()
    assert "24 runs, 12 conditions" in text
    assert "| smollm2_135m | random_word | averaging | none | 64 | 2 |" in text
    assert "## System prompts" not in text
    assert KEY not in text


def test_system_prompt_table_is_laid_out_like_the_guide(tmp_path):
    root = tmp_path / "prompts"
    for aug, heldout, retention in (("none", 0.47, 1.0), ("templates", 0.98, 0.96)):
        for seed in (0, 1):
            write_run(root, f"{aug}{seed}", fake_summary(augmentation=aug, seed=seed, heldout=heldout + seed / 100,
                                                        retention=retention))
    files = sweep_report(root, tmp_path / "out")
    text = files["markdown"].read_text()
    section = text.split("## System prompts")[1].split("## Runs")[0]
    assert "| smollm2_135m | ❌ | 47.5% ± 0.7 | 0.333 | 1.000 | 2 |" in section
    assert "| smollm2_135m | ✅ | 98.5% ± 0.7 | 0.320 | 0.960 | 2 |" in section
    assert files["system_prompts"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plot_system_prompts(files["csv"], tmp_path / "p.png")
    heights = sorted(round(bar.get_height(), 4) for bar in fig.axes[0].patches)
    assert heights == [0.475, 0.985]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["smollm2_135m"], "the group names its model"


def test_wandb_offline_gets_the_tradeoff_and_no_key(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "report"
    report_main([str(sweep), "--out", str(out), "--wandb", "offline", "--group", "fixture-sweep"])
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = [p for p in runs[0].rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    assert any("tradeoff" in p.name and p.suffix == ".json" for p in files), "the trade-off table is logged"
    for path in (out / "wandb").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"{path} holds a key"


def test_cli_runs_alone_on_any_folder(sweep, tmp_path, capsys, monkeypatch):
    report_main([str(sweep), "--out", str(tmp_path / "cli")])
    assert (tmp_path / "cli" / CSV).exists()
    assert not (tmp_path / "cli" / "wandb").exists(), "no --wandb: no W&B"
    with pytest.raises(SystemExit) as err:
        report_main([str(tmp_path / "empty")])
    assert err.value.code == 1
    assert "no run summaries" in capsys.readouterr().err
    # --wandb builds the logger through the config's checks, as logger=wandb does
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(SystemExit) as err:
        report_main([str(sweep), "--out", str(tmp_path / "online"), "--wandb", "online"])
    assert err.value.code == 1
    assert "logger.mode=online needs WANDB_API_KEY" in capsys.readouterr().err


def test_wandb_group_is_the_sweep_folder_unless_named():
    from oml_exp.reporting.wandb_log import group

    assert group(None) is None, "a single run outside Hydra has no group"
    assert group(None, "outputs/sweeps/x") == "x", "a sweep file's runs group under its name"
    assert group(None, "outputs/multiruns/2025-01-02/03-04-05") == "2025-01-02/03-04-05"
    assert group("mine", "outputs/sweeps/x") == "mine"


def test_a_runs_wandb_summary_holds_its_headline_attacks_and_intervals():
    from oml_exp.reporting.report import success
    from oml_exp.reporting.wandb_log import summary_metrics

    check = {"success_rate": 0.75, "fingerprints": 16, "chat_template": False,
             "sets": {"raw/heldout": {"templates": 10, "mean": 0.5}}}
    summary = fake_summary(num=16)
    summary["headline"].update(success(check))
    summary["headline"]["attacks"] = {"prune": {"kind": "prune", "strength": {"measure": "fraction", "value": 0.2},
                                                **success({**check, "success_rate": 0.25}),
                                                "mean": {"retention": 0.97, "retention_ci": [0.95, 0.99]}}}
    metrics = summary_metrics(summary)
    assert (metrics["success_rate"], metrics["success_ci_lo"], metrics["success_ci_hi"]) == (0.75, *wilson(0.75, 16))
    assert (metrics["heldout_success_ci_lo"], metrics["heldout_success_ci_hi"]) == wilson(0.5, 16)
    assert metrics["tasks/piqa/ci_low"] < metrics["tasks/piqa/retention"] < metrics["tasks/piqa/ci_high"]
    assert metrics["drift/top1_agreement"] == 0.99
    assert (metrics["attacks/prune/success_rate"], metrics["attacks/prune/success_ci_hi"]) == (0.25, wilson(0.25, 16)[1])
    assert (metrics["attacks/prune/mean/retention_ci_lo"], metrics["attacks/prune/strength/value"]) == (0.95, 0.2)
    assert all(isinstance(v, (int, float)) for v in metrics.values()) and KEY not in json.dumps(metrics)


def test_the_wandb_tradeoff_table_carries_the_plotted_intervals(sweep):
    from oml_exp.reporting.table import tradeoff

    table = tradeoff(collect(sweep))
    assert len(table) == 12
    for metric in ("success_rate", "heldout_success"):
        assert ((0 <= table[f"{metric}_lo"]) & (table[f"{metric}_lo"] <= table[f"{metric}_mean"])
                & (table[f"{metric}_mean"] <= table[f"{metric}_hi"]) & (table[f"{metric}_hi"] <= 1)).all()


def test_runs_without_measurements_get_a_table_and_no_plot(tmp_path):
    summary = fake_summary()
    summary["headline"] = {}
    summary["stages"] = {"generate": summary["stages"]["generate"]}
    write_run(tmp_path / "gen", "0", summary)
    files = sweep_report(tmp_path / "gen", tmp_path / "out")
    assert set(files) == {"csv", "markdown"}


def test_wandb_run_id_is_one_per_folder_and_experiment(tmp_path):
    from oml_exp.reporting.wandb_log import run_id

    assert run_id(tmp_path / "0", "generate:a") == run_id(tmp_path / "x" / ".." / "0", "generate:a"), "a rerun resumes"
    assert run_id(tmp_path / "0", "generate:a") != run_id(tmp_path / "0", "generate:b"), "another experiment, same folder"
    assert run_id(tmp_path / "0", "generate:a") != run_id(tmp_path / "1", "generate:a")
