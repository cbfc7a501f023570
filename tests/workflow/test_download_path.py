"""The workflow's real data path end to end, offline: ``data.source: download``, ``tokenizer.source: download`` and
``model.init: official`` against tiny stand-ins of the real files served over HTTP on 127.0.0.1.

download (verified, resumed from a .part, checksums recorded) -> unpack -> prepare -> subsets -> image cache ->
official checkpoint load -> training runs -> tables and figures; and a wrong md5 stops the workflow with nothing
left under the download's name.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fixtures_real import build

from tests.conftest import serve

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests/workflow/configs/tiny.yaml"
IMAGE_ZIPS = ("train2014.zip", "val2014.zip")
# Targets: the tables, the report and the figures this grid can draw. Not `all`: it asks for figs 6-10 of every PEFT
# method, and a curve figure of a method outside the grid fails ("no test curves for prompt on coco").
FIGURES = ("fig3", "fig4", "fig5", "fig5_gpu_hours", "fig8_lora")
TARGETS = (
    "results/dltest/tables/runs.csv",
    "results/dltest/tables/curves.csv",
    "results/dltest/report.md",
    *(f"results/dltest/figures/{stem}.{ext}" for stem in FIGURES for ext in ("pdf", "png")),
)

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, configfile: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent  # the venv: snakemake, and torchrun for the training rules
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)  # urllib would send 127.0.0.1 requests through a configured proxy
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    cmd = [
        str(bindir / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--profile",
        str(REPO / "profiles/local"),
        *args,
    ]
    return subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build(tmp_path_factory.mktemp("real_fixture"))


@pytest.fixture(scope="module")
def server(fixture):
    with serve({f"/{p.name}": p.read_bytes() for p in sorted(fixture.serve_dir.iterdir()) if p.is_file()}) as srv:
        yield srv


def download_config(fx, base_url: str) -> dict:
    """tiny.yaml switched to the real data path, with a one-method grid over both tasks."""
    config = yaml.safe_load(TINY.read_text())
    config["study"] = "dltest"
    config["title"] = "download path test (tiny stand-ins of the real files over local HTTP)"
    data = config["data"]
    data["source"] = "download"
    data["expected_counts"] = copy.deepcopy(fx.expected_counts)
    downloads = {}
    for name in sorted(fx.files):
        spec = {"url": f"{base_url}/{name}"}
        if name in IMAGE_ZIPS:  # the COCO zips have published sizes and md5s; the rest is pinned on first download
            spec.update(
                size=fx.files[name]["size"],
                md5=fx.files[name]["md5"],
                expected_files=fx.image_counts[name.removesuffix(".zip")],
            )
        downloads[name] = spec
    data["downloads"] = downloads
    config["tokenizer"] = {"source": "download"}
    config["model"] = {"preset": "tiny", "overrides": {}, "init": "official"}
    for task in config["tasks"].values():
        task["ratios"] = [1.0]
    config["methods"] = {"lora": config["methods"]["lora"], "full": config["methods"]["full"]}
    config["classifier"] = [False]
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def failure(proc: subprocess.CompletedProcess, workdir: Path) -> str:
    logs = "\n".join(
        f"--- {p.relative_to(workdir)}\n{p.read_text()[-2000:]}"
        for p in sorted(workdir.glob("results/**/logs/**/*.log"))
    )
    return f"{proc.stderr[-6000:]}\n{logs[-8000:]}"


def test_real_data_path_end_to_end(fixture, server, tmp_path):
    from vlpeft.data.download import read_checksum_record
    from vlpeft.grid import expand

    config = download_config(fixture, server.base)
    cfg_path = write_config(tmp_path / "download.yaml", config)
    work = tmp_path / "work"
    downloads = work / "results/downloads"

    # An interrupted earlier download of val2014.zip: the first half is on disk as .part and must be resumed.
    downloads.mkdir(parents=True)
    val = (fixture.serve_dir / "val2014.zip").read_bytes()
    half = len(val) // 2
    (downloads / "val2014.zip.part").write_bytes(val[:half])

    proc = snakemake(work, cfg_path, *TARGETS, timeout=1200)
    assert proc.returncode == 0, failure(proc, work)

    # Downloads: every file under its final name, byte-identical to what was served, no .part left over.
    assert sorted(p.name for p in downloads.iterdir() if p.is_file()) == sorted([*fixture.files, "checksums.txt"])
    assert sorted(p.name for p in downloads.iterdir() if p.is_dir()) == ["logs"]  # the downloads' own logs
    for name in fixture.files:
        assert (downloads / name).read_bytes() == (fixture.serve_dir / name).read_bytes(), name
    assert not list(work.glob("results/downloads/*.part"))
    assert {"path": "/val2014.zip", "range": f"bytes={half}-"} in server.requests
    assert "resuming at" in (work / "results/downloads/logs/val2014.zip.log").read_text()

    # Files given without a checksum are pinned in checksums.txt with their sha256 and size; the zips with an md5
    # are not.
    recorded = read_checksum_record(downloads / "checksums.txt")
    unpinned = {n for n in fixture.files if n not in IMAGE_ZIPS}
    assert set(recorded) == unpinned
    for name in unpinned:
        assert recorded[name] == (fixture.files[name]["sha256"], fixture.files[name]["size"]), name

    # Unpacked: the images under their COCO folders, the JSONs from their archives, vocab and checkpoint copied.
    raw = work / "results/dltest/data/raw"
    for folder, n in fixture.image_counts.items():
        assert len(list((raw / "images" / folder).glob("COCO_*.jpg"))) == n
    for name in (
        "dataset_coco.json",
        "v2_OpenEnded_mscoco_train2014_questions.json",
        "v2_mscoco_val2014_annotations.json",
    ):
        assert (raw / name).stat().st_size > 0
    assert not (raw / "dataset_flickr8k.json").exists()
    assert (work / "results/dltest/model/vocab.txt").read_bytes() == (fixture.serve_dir / "vocab.txt").read_bytes()
    assert (raw / "mplug_base.pth").read_bytes() == (fixture.serve_dir / "mplug_base.pth").read_bytes()

    # Prepared records match the expected split sizes; the image cache was built.
    for task, counts in fixture.expected_counts.items():
        for split, n in counts.items():
            lines = (work / f"results/dltest/data/prepared/{task}/{split}.jsonl").read_text().splitlines()
            assert len(lines) == n, (task, split)
    assert (work / "results/dltest/data/images_64.npy").stat().st_size > 0

    # The official checkpoint was converted once, its load report kept beside the slim file, and every training
    # run started from that slim file.
    report = (work / "results/dltest/model/mplug_base.slim.safetensors.report.txt").read_text()
    assert "ignored by reason:" in report and "momentum copy" in report
    assert "missing 0, mismatched 0" in report
    runs = pd.read_csv(work / "results/dltest/tables/runs.csv")
    assert len(runs) == len(expand(config)) == 4
    assert set(runs["status"]) == {"success"}
    assert runs["best_val"].notna().all()
    train_logs = sorted(work.glob("results/dltest/logs/train/**/*.log"))
    assert len(train_logs) == len(runs)
    for log in train_logs:
        text = log.read_text()
        assert "mplug_base.slim.safetensors memory-mapped (converted from mplug_base.pth)" in text, log
    for stem in FIGURES:
        for ext in ("pdf", "png"):
            assert (work / f"results/dltest/figures/{stem}.{ext}").stat().st_size > 1000, (stem, ext)
    assert (work / "results/dltest/report.md").stat().st_size > 0


def test_wrong_md5_stops_the_workflow_and_leaves_no_file(fixture, server, tmp_path):
    config = download_config(fixture, server.base)
    good = config["data"]["downloads"]["train2014.zip"]["md5"]
    bad = "0" * 32 if good != "0" * 32 else "1" * 32
    config["data"]["downloads"]["train2014.zip"]["md5"] = bad
    cfg_path = write_config(tmp_path / "bad_md5.yaml", config)
    work = tmp_path / "work"

    proc = snakemake(work, cfg_path, *TARGETS, timeout=600)
    assert proc.returncode != 0, proc.stdout[-3000:]
    log = (work / "results/downloads/logs/train2014.zip.log").read_text()
    assert "ChecksumError" in log and "md5 mismatch" in log and bad in log and good in log, log[-3000:]
    assert not (work / "results/downloads/train2014.zip").exists()
    assert not (work / "results/downloads/train2014.zip.part").exists()
    assert not (work / "results/dltest/data/raw/images/.complete").exists()
    assert not (work / "results/dltest/tables/runs.csv").exists()
