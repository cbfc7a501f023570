"""Run records -> runs / curves / baseline tables, including failed, preempted and missing runs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vlpeft import aggregate, grid
from vlpeft.grid import Run
from vlpeft.plots import tables
from tests.run_rows import CONFIG, DIGESTS, METRIC, NO_TEST_AT_START, REPO, STUDY, TINY, make_record

FAILED, PREEMPTED, MISSING = 3, 5, 7


@pytest.fixture(scope="module")
def runs() -> list[Run]:
    runs = grid.expand(CONFIG)
    assert len(runs) == 20
    assert {runs[i].task for i in (FAILED, PREEMPTED, MISSING)} == {"coco"} and runs[NO_TEST_AT_START].task == "vqa"
    return runs


@pytest.fixture(scope="module")
def study(runs: list[Run], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/tiny/runs/<run_id>/record.json for every run, except one failed, one preempted and one missing run."""
    root = tmp_path_factory.mktemp("study")
    for i, run in enumerate(runs):
        d = root / run.dir
        d.mkdir(parents=True)
        if i == MISSING:
            continue  # the directory of a job that never wrote anything
        if i == FAILED:
            # A failure after one evaluation: the status file has a best score, which must not be reported.
            (d / "status.json").write_text(json.dumps(make_record(run, i, "failed")))
        elif i == PREEMPTED:
            (d / "status.json").write_text(json.dumps(make_record(run, i, "preempted")))
        else:
            rec = make_record(run, i)
            (d / "record.json").write_text(json.dumps(rec))
            (d / "status.json").write_text(json.dumps(rec))
    return root


@pytest.fixture(scope="module")
def aggregated(runs: list[Run], study: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return aggregate.aggregate(runs, STUDY, DIGESTS, study)


def test_one_row_per_run_with_status(runs: list[Run], aggregated) -> None:
    table, _ = aggregated
    assert list(table.columns) == aggregate.RUN_COLUMNS
    assert table["run_id"].tolist() == [r.run_id for r in runs]
    expected = ["success"] * len(runs)
    expected[FAILED], expected[PREEMPTED], expected[MISSING] = "failed", "preempted", "missing"
    assert table["status"].tolist() == expected


def test_successful_rows(runs: list[Run], aggregated) -> None:
    table, _ = aggregated
    for i, run in enumerate(runs):
        if i in (FAILED, PREEMPTED, MISSING):
            continue
        row = table.iloc[i]
        base = 10.0 + i
        assert (row["task"], row["method"], row["classifier"], row["data_ratio"], row["seed"]) == (
            run.task,
            run.method,
            run.classifier,
            run.ratio,
            run.seed,
        )
        assert row["size"] == run.size if run.size is not None else math.isnan(row["size"])
        assert row["metric"] == METRIC[run.task]
        assert (row["best_val"], row["best_step"], row["test_at_best_val"]) == (base + 5, 2, base + 4)
        assert row["final_val"] == base + 1  # the last evaluation, not the best one
        assert row["paper_metric"] == (base + 4 if run.task == "coco" else base + 5)
        assert (row["trainable_params"], row["total_params"]) == (1000 * (i + 1), 5_000_000)
        assert row["trainable_params_merged"] == 500 * (i + 1)
        assert (row["data_size"], row["samples_seen"]) == (40 if run.ratio == 1.0 else 20, 32)
        assert (row["gpu_hours"], row["wall_time_s"]) == (0.0, 60.0 + i)


def test_unsuccessful_rows_have_no_metrics(runs: list[Run], aggregated) -> None:
    table, _ = aggregated
    for i in (FAILED, PREEMPTED):
        row = table.iloc[i]
        for col in ("paper_metric", "best_val", "best_step", "test_at_best_val", "final_val"):
            assert math.isnan(row[col]), (i, col)
        assert row["trainable_params"] == 1000 * (i + 1)  # cost columns are kept from the status file
    row = table.iloc[MISSING]
    assert row["run_id"] == runs[MISSING].run_id and row["metric"] == "CIDEr"
    for col in ("trainable_params", "total_params", "data_size", "best_val", "final_val", "wall_time_s"):
        assert math.isnan(row[col]), col


@pytest.mark.parametrize("task", ["coco", "vqa"])
def test_metric_columns_when_best_val_and_best_test_steps_differ(task: str) -> None:
    """Validation peaks at step 2, test at step 6: ``best_val`` and ``test_at_best_val`` come from step 2,
    ``paper_metric`` is COCO's best test score (step 6) and VQAv2's best validation score (step 2)."""
    run = Run(task, "lora", 2, 1.0, False, 0, "results/test")
    metric = METRIC[task]
    val, test = [10.0, 15.0, 12.0, 11.0], [9.0, 11.0, 13.0, 14.0]
    curve = [{"step": 2 * k, "val": {metric: v}, "test": {metric: t}} for k, (v, t) in enumerate(zip(val, test))]
    record = {
        "curve": curve,
        "best": {"step": 2, "val": 15.0, "test": 11.0, "metric": metric},
        "config": {"schedule": {"kind": "steps"}},
    }
    row = aggregate.run_row(run, record, "success")
    assert (row["best_val"], row["best_step"], row["test_at_best_val"], row["final_val"]) == (15.0, 2, 11.0, 11.0)
    assert row["paper_metric"] == (14.0 if task == "coco" else 15.0)
    # Without test evaluations COCO has no paper metric (VQAv2's needs none).
    no_test = {**record, "curve": [{k: v for k, v in p.items() if k != "test"} for p in curve]}
    paper = aggregate.run_row(run, no_test, "success")["paper_metric"]
    assert math.isnan(paper) if task == "coco" else paper == 15.0


def run_size(run: Run) -> int:
    return 40 if run.ratio == 1.0 else 20


def test_curves_rows_for_val_and_test(runs: list[Run], aggregated) -> None:
    _, curves = aggregated
    assert list(curves.columns) == aggregate.CURVE_COLUMNS
    ok = [i for i in range(len(runs)) if i not in (FAILED, PREEMPTED, MISSING)]
    assert len(curves) == 6 * len(ok) - 1  # 3 points x (val, test), one point without test
    assert set(curves["run_id"]) == {runs[i].run_id for i in ok}
    for i in ok:
        run, base = runs[i], 10.0 + i
        mine = curves.loc[curves["run_id"] == run.run_id]
        assert set(mine["metric"]) == {METRIC[run.task]}
        val = mine.loc[mine["split"] == "val"]
        test = mine.loc[mine["split"] == "test"]
        assert val["step"].tolist() == [0, 2, 4]
        assert val["epoch"].tolist() == [0.0, 16 / run_size(run), 32 / run_size(run)]
        assert set(mine["schedule"]) == {"steps" if run.task == "coco" else "epochs"}
        assert val["value"].tolist() == [base, base + 5, base + 1]
        if i == NO_TEST_AT_START:
            assert test["step"].tolist() == [2, 4]
            assert test["value"].tolist() == [base + 4, base + 3]
        else:
            assert test["step"].tolist() == [0, 2, 4]
            assert test["value"].tolist() == [base - 1, base + 4, base + 3]
        assert (mine["method"] == run.method).all() and (mine["classifier"] == run.classifier).all()


def test_tables_validate_with_the_figures_loader(runs: list[Run], aggregated) -> None:
    table, curves = aggregated
    checked = tables.validate_runs(table)
    assert len(checked) == len(runs)
    assert checked["status"].value_counts().to_dict() == {"success": 17, "failed": 1, "preempted": 1, "missing": 1}
    assert len(tables.successful(checked)) == 17
    assert len(tables.validate_curves(curves)) == len(curves)


def test_write_tables_round_trips_through_csv(runs: list[Run], study: Path, tmp_path: Path) -> None:
    base = tmp_path / "baseline" / "coco.json"
    base.parent.mkdir()
    base.write_text(json.dumps({"task": "coco", "scores": {"val": {"CIDEr": 5.0}, "test": {"CIDEr": 4.0}}}))
    out = tmp_path / "tables"
    table = aggregate.write_tables(
        runs,
        [base],
        out / "runs.csv",
        out / "curves.csv",
        out / "baseline.csv",
        root=study,
        study=STUDY,
        digests=DIGESTS,
    )
    loaded = tables.load_runs(out / "runs.csv")
    assert loaded["run_id"].tolist() == table["run_id"].tolist()
    assert loaded["best_val"].tolist()[:3] == [15.0, 16.0, 17.0]
    assert loaded.loc[loaded["method"] == "full", "size"].isna().all()
    assert len(tables.load_curves(out / "curves.csv")) == 6 * 17 - 1
    assert tables.load_baseline(out / "baseline.csv")["value"].tolist() == [5.0, 4.0]


def test_nothing_written_yet_gives_all_missing(runs: list[Run], tmp_path: Path) -> None:
    table, curves = aggregate.aggregate(runs, STUDY, DIGESTS, tmp_path)
    assert (table["status"] == "missing").all() and len(table) == 20
    assert curves.empty and list(curves.columns) == aggregate.CURVE_COLUMNS
    assert len(tables.validate_runs(table)) == 20


def test_status_file_without_status_counts_as_failed(runs: list[Run], tmp_path: Path) -> None:
    d = tmp_path / runs[0].dir
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"error": "killed"}))
    record, status = aggregate.read_status(d)
    assert (record, status) == ({"error": "killed"}, "failed")


@pytest.mark.parametrize("name", ["record.json", "status.json"])
def test_a_truncated_record_names_the_file_and_what_to_do(runs: list[Run], tmp_path: Path, name: str) -> None:
    """One damaged record among hundreds: the error says which one (not a bare JSONDecodeError)."""
    for run in runs[:3]:
        (tmp_path / run.dir).mkdir(parents=True)
        (tmp_path / run.dir / "status.json").write_text(json.dumps(make_record(run, 0)))
    path = tmp_path / runs[1].dir / name
    path.write_text(json.dumps(make_record(runs[1], 0))[:40])
    with pytest.raises(ValueError, match=re.escape(f"{path} is not valid JSON") + ".*delete it .* rerun that run"):
        aggregate.aggregate(runs, STUDY, DIGESTS, tmp_path)
    baseline = tmp_path / "coco.json"
    baseline.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{baseline} is not valid JSON") + ".*rerun evaluate_baseline"):
        aggregate.baseline_table([baseline])


def test_baseline_table(tmp_path: Path) -> None:
    coco, vqa = tmp_path / "coco.json", tmp_path / "vqa.json"
    coco.write_text(
        json.dumps(
            {
                "task": "coco",
                "init_weights": "x",
                "scores": {"val": {"CIDEr": 12.5, "BLEU-4": 0.2}, "test": {"CIDEr": 11.0}},
            }
        )
    )
    vqa.write_text(json.dumps({"task": "vqa", "scores": {"val": {"accuracy": 41.0, "other": 3.0}}}))
    table = aggregate.baseline_table([coco, vqa])
    assert table.to_dict("records") == [
        {"task": "coco", "metric": "CIDEr", "split": "val", "value": 12.5},
        {"task": "coco", "metric": "CIDEr", "split": "test", "value": 11.0},
        {"task": "vqa", "metric": "accuracy", "split": "val", "value": 41.0},
    ]
    assert len(tables.validate_baseline(table)) == 3
    empty = aggregate.baseline_table([])
    assert empty.empty and list(empty.columns) == ["task", "metric", "split", "value"]


def test_command_line(
    runs: list[Run], study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(study)
    (study / "results" / "tiny" / "baseline").mkdir()
    (study / "results" / "tiny" / "baseline" / "vqa.json").write_text(
        json.dumps({"task": "vqa", "scores": {"val": {"accuracy": 30.0}}})
    )
    try:
        assert aggregate.main(["--config", str(TINY), "--out", str(tmp_path / "out")]) == 0
    finally:
        (study / "results" / "tiny" / "baseline" / "vqa.json").unlink()
        (study / "results" / "tiny" / "baseline").rmdir()
    assert "success" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "out" / "runs.csv")) == 20
    assert pd.read_csv(tmp_path / "out" / "baseline.csv").to_dict("records") == [
        {"task": "vqa", "metric": "accuracy", "split": "val", "value": 30.0}
    ]


def test_gain_vs_baseline_column():
    import pandas as pd

    from vlpeft.aggregate import add_baseline

    table = pd.DataFrame({"task": ["coco", "vqa", "vqa"], "best_val": [80.0, 30.0, float("nan")]})
    baseline = pd.DataFrame(
        {
            "task": ["coco", "coco", "vqa"],
            "metric": ["CIDEr", "CIDEr", "accuracy"],
            "split": ["val", "test", "val"],
            "value": [70.0, 75.0, 0.5],
        }
    )
    out = add_baseline(table, baseline)
    assert out["baseline_val"].tolist() == [70.0, 0.5, 0.5]
    assert out["gain_vs_baseline"].tolist()[:2] == [10.0, 29.5]
    assert pd.isna(out["gain_vs_baseline"].iloc[2])


def test_command_line_refuses_duplicate_seeds(tmp_path: Path) -> None:
    """Duplicate seeds would give one run directory two rows (and double its weight in every mean)."""
    config = yaml.safe_load(TINY.read_text())
    config["seeds"] = [0, 1, 0]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # (the schema's uniqueItems says it first, naming the file and the key)
    with pytest.raises(ValueError, match=r"config\.yaml: seeds: \[0, 1, 0\] has non-unique elements$"):
        aggregate.main(["--config", str(path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_aggregate_names_the_evaluators_primary_metric() -> None:
    """aggregate reads the task -> metric map from vlpeft.tasks (no torch to import); it must be the evaluator's."""
    from vlpeft.evaluate import PRIMARY_METRIC

    assert aggregate.PRIMARY_METRIC == PRIMARY_METRIC


def test_rows_say_which_study_data_commit_and_config_they_come_from(runs: list[Run], aggregated) -> None:
    table, _ = aggregated
    assert STUDY["study"] == "tiny" and STUDY["data_source"] == "synthetic"
    assert set(table["study"]) == {"tiny"} and set(table["data_source"]) == {"synthetic"}
    assert set(table["study_digest"]) == {STUDY["study_digest"]}
    assert table["config_digest"].tolist() == [DIGESTS[r.run_id] for r in runs]
    assert table.loc[1, "commit"] == "c0ffee" * 6 + "abcd-dirty" and table.loc[0, "commit"].endswith("abcd")
    assert pd.isna(table.loc[MISSING, "commit"])
    info = tables.table_provenance(tables.validate_runs(table))
    assert (info["study"], info["study_digest"]) == ("tiny", STUDY["study_digest"])


def test_a_record_of_another_configuration_is_refused(runs: list[Run], tmp_path: Path) -> None:
    """A record whose config digest is not what the config resolves its run to (an edited config, or another
    study's record in this run directory) is refused, naming the run directory, never counted as a success."""
    for i, run in enumerate(runs[:4]):
        (tmp_path / run.dir).mkdir(parents=True)
        (tmp_path / run.dir / "record.json").write_text(json.dumps(make_record(run, i)))
    other = {
        **CONFIG,
        "methods": {**CONFIG["methods"], "lora": {**CONFIG["methods"]["lora"], "coco": {"sizes": [2], "lr": 5.0e-3}}},
    }
    digests = grid.run_digests(other)
    changed = [r.run_id for r in runs[:4] if digests[r.run_id] != DIGESTS[r.run_id]]
    assert changed, "the edit must change a written run's digest"
    first = next(r for r in runs if r.run_id == changed[0])
    with pytest.raises(aggregate.StaleRecordError, match=re.escape(first.dir) + ".*another configuration"):
        aggregate.aggregate(runs, grid.study_info(other), digests, tmp_path)


def test_another_studys_records_are_never_the_papers(runs: list[Run], study: Path) -> None:
    """The paper's config reads only results/paper/: the tiny study's 17 successful records are not its runs; and a
    tiny record copied into a paper run directory of the same run id is refused by its config digest."""
    paper = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    paper_runs, paper_digests, paper_study = grid.expand(paper), grid.run_digests(paper), grid.study_info(paper)
    table, _ = aggregate.aggregate(paper_runs, paper_study, paper_digests, study)
    assert len(table) == 810 and set(table["status"]) == {"missing"}
    shared = next(r for r in paper_runs if r.run_id in {t.run_id for t in runs} and r.method == "lora")
    tiny = next(t for t in runs if t.run_id == shared.run_id)
    (study / shared.dir).mkdir(parents=True)
    (study / shared.dir / "record.json").write_text((study / tiny.dir / "record.json").read_text())
    try:
        with pytest.raises(aggregate.StaleRecordError, match=re.escape(shared.dir)):
            aggregate.aggregate(paper_runs, paper_study, paper_digests, study)
    finally:
        (study / shared.dir / "record.json").unlink()


def test_workflow_figures_and_report_refuse_a_table_of_another_configuration(aggregated) -> None:
    """What the plot and report scripts check: the table's study digest is the one the config resolves to."""
    from vlpeft.provenance import check_expected

    info = tables.table_provenance(tables.validate_runs(aggregated[0]))
    check_expected(info, STUDY)
    with pytest.raises(ValueError, match="study_digest .* but the config resolves to 'abc'"):
        check_expected(info, {**STUDY, "study_digest": "abc"})
    with pytest.raises(ValueError, match="study 'tiny', but the config resolves to 'paper'"):
        check_expected(info, {**STUDY, "study": "paper"})


def test_the_pilot_is_one_short_real_run_per_method_and_its_tables_draw_every_figure(tmp_path: Path) -> None:
    """config/pilot.yaml: every method once, at the paper's smallest ratio, on the real data with the official
    checkpoint at the paper's batch, evaluation capped; the downloads are the paper's (shared, not fetched twice).
    Records like the pilot's (one evaluation) aggregate into tables every figure the workflow asks for and the report
    are drawn from."""
    from vlpeft.plots.figures import build_figure
    from vlpeft.report import claims_report

    pilot = grid.load_config(REPO / "config" / "pilot.yaml")
    paper = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    runs = grid.expand(pilot)
    from vlpeft.methods.registry import info

    # The paper's methods (those beyond the paper have their own study: config/beyond.yaml).
    assert sorted(r.method for r in runs) == sorted(m for m in grid.METHODS if info(m).in_paper)
    for run in runs:
        assert run.ratio == min(paper["tasks"][run.task]["ratios"]) and run.dir.startswith("results/pilot/")
        d = grid.resolve(pilot, run)
        assert d["schedule"].get("steps", 10) <= 10 and d["eval"]["max_items"] <= 32
        assert (d["init_weights"], d["model_preset"], d["total_batch_size"]) == (
            "results/pilot/model/mplug_base.slim.safetensors",
            "base",
            256,
        )  # the official weights, converted once
    assert pilot["model"]["init"] == "official"
    assert pilot["data"]["source"] == "download" and pilot["data"]["downloads"] == paper["data"]["downloads"]

    study, digests = grid.study_info(pilot), grid.run_digests(pilot)
    for i, run in enumerate(runs):
        metric = METRIC[run.task]
        rec = {
            **make_record(run, i),
            "config_digest": digests[run.run_id],
            "curve": [{"step": 10, "epoch": 0.04, "val": {metric: 20.0 + i}, "test": {metric: 19.0 + i}}],
            "best": {"step": 10, "val": 20.0 + i, "test": 19.0 + i, "metric": metric},
        }
        (tmp_path / run.dir).mkdir(parents=True)
        (tmp_path / run.dir / "record.json").write_text(json.dumps(rec))
    out = tmp_path / "tables"
    aggregate.write_tables(
        runs,
        [],
        out / "runs.csv",
        out / "curves.csv",
        out / "baseline.csv",
        root=tmp_path,
        study=study,
        digests=digests,
    )
    table, curves = tables.load_runs(out / "runs.csv"), tables.load_curves(out / "curves.csv")
    assert set(table["status"]) == {"success"} and set(table["data_source"]) == {"real"}
    stems = [
        "fig3",
        "fig4",
        "fig5",
        "fig5_gpu_hours",
        "fig6_prompt",
        "fig7_prefix",
        "fig8_lora",
        "fig9_serial_adapter",
        "fig10_parallel_adapter",
    ]
    for stem in stems:
        title = build_figure(stem, table, curves).get_suptitle()
        assert "study pilot | real data | commit c0ffee" in title and "SYNTHETIC" not in title, stem
    assert "Study `pilot`, real data" in claims_report(table, n_boot=10)
