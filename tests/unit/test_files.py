"""Content digests with sidecars, safe loads that name the file, and the run directory lock."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from vlpeft import files
from vlpeft.files import CorruptFileError, RunLock, RunLockedError, content_digest, record_digest, sidecar_path

from ..conftest import make_run_config


@pytest.fixture
def hashed(monkeypatch) -> list[Path]:
    """The files actually read and hashed (not answered from a sidecar)."""
    calls: list[Path] = []
    real = files._sha256

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(files, "_sha256", counting)
    return calls


def _age(path: Path, seconds: float) -> None:
    """Set the file's mtime ``seconds`` into the past (a file written a while before its digest was taken)."""
    t = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(t, t))


def test_digest_is_recorded_once_and_then_read_from_the_sidecar(tmp_path, hashed):
    path = tmp_path / "init.bin"
    path.write_bytes(b"weights" * 1000)
    _age(path, 10)
    digest = record_digest(path)
    entry = json.loads(sidecar_path(path).read_text())
    assert entry["sha256"] == digest and entry["size"] == 7000 and entry["mtime_ns"] == path.stat().st_mtime_ns
    assert [content_digest(path) for _ in range(3)] == [digest] * 3
    assert hashed == [path]  # only the stage's own hashing


def test_a_file_rewritten_by_hand_is_hashed_again(tmp_path, hashed):
    path = tmp_path / "subset.json"
    path.write_text('{"items": [1, 2, 3]}')
    _age(path, 10)
    old = record_digest(path)
    path.write_text('{"items": [1, 2, 4]}')  # same size, new content
    new = content_digest(path)
    assert new != old and len(hashed) == 2
    assert json.loads(sidecar_path(path).read_text())["sha256"] == new


def test_a_digest_taken_right_after_a_write_is_checked_again(tmp_path, hashed):
    """A same-size rewrite within one tick of a coarse file-system clock keeps the mtime: a digest taken within
    RACY_NS of the file's modification is not trusted (git's "racily clean" rule), the next reader hashes again."""
    path = tmp_path / "records.jsonl"
    path.write_text("{}\n")
    digest = record_digest(path)  # mtime ~ now
    assert content_digest(path) == digest
    assert len(hashed) == 2


def test_a_large_file_is_hashed_once_by_its_stage_even_right_after_writing(tmp_path, hashed, monkeypatch):
    """The stage waits out the racy window before hashing a large file (an initial checkpoint), so that the runs
    reading it right away trust the sidecar instead of each hashing 1 GB."""
    monkeypatch.setattr(files, "RACY_NS", 200_000_000)
    monkeypatch.setattr(files, "LARGE_BYTES", 1000)
    path = tmp_path / "mplug_base.pth"
    path.write_bytes(b"w" * 1000)
    t0 = time.monotonic()
    digest = record_digest(path)
    assert 0.1 < time.monotonic() - t0 < 2
    assert content_digest(path) == digest and hashed == [path]


def test_a_replaced_file_with_its_old_size_and_mtime_is_hashed_again(tmp_path, hashed):
    """An editor's save (a new file renamed over the old one) is caught by the inode even with mtime restored."""
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\nfoo\n")
    _age(path, 10)
    old, mtime = record_digest(path), path.stat().st_mtime_ns
    new = tmp_path / "vocab.txt.new"
    new.write_text("[PAD]\nbar\n")
    os.utime(new, ns=(mtime, mtime))
    new.replace(path)
    assert content_digest(path) != old and len(hashed) == 2


def test_a_missing_or_garbled_sidecar_means_hashing(tmp_path, hashed):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n")
    _age(path, 10)
    expected = record_digest(path)
    sidecar_path(path).write_text("{not json")
    assert content_digest(path) == expected
    sidecar_path(path).unlink()
    assert content_digest(path) == expected
    assert len(hashed) == 3
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        content_digest(tmp_path / "nope.txt")


@pytest.mark.parametrize("content", [b"", b'{"items": [1, 2', b"\x00\xff\xfe"], ids=["empty", "truncated", "binary"])
def test_unreadable_json_names_the_file_and_the_remedy(tmp_path, content):
    path = tmp_path / "record.json"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError, match=re.escape(f"{path} is not valid JSON") + ".*: delete it"):
        files.read_json(path, "delete it")


def test_torch_load_refuses_code_and_names_damaged_files(tmp_path):
    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / "ran"),)

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(files.UnsafeFileError, match="refusing to load .*evil.pt.*nothing of it was run. Fix it."):
        files.torch_load(tmp_path / "evil.pt", "Fix it.")
    assert not (tmp_path / "ran").exists()
    torch.save({"x": torch.ones(100)}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    for name, content in (("empty.pt", b""), ("cut.pt", data[: len(data) // 2]), ("bin.pt", b"\x00\xff binary")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CorruptFileError, match=re.escape(str(tmp_path / name)) + ".*: Fix it.$"):
            files.torch_load(tmp_path / name, "Fix it.")


# -- the run lock --------------------------------------------------------------------------------------------------
def test_second_lock_names_the_holder_and_release_frees_it(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLockedError, match=re.escape(f"process {os.getpid()} on host {os.uname().nodename}")):
            RunLock(tmp_path / "run").acquire()
    RunLock(tmp_path / "run").acquire().release()


def test_a_crashed_holders_lock_is_not_stale(tmp_path):
    """The kernel drops an flock with its process: a SIGKILLed run leaves nothing to clean up by hand."""
    code = (
        "import os, sys; from vlpeft.files import RunLock; RunLock(sys.argv[1]).acquire(); print('locked', "
        "flush=True); os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.strip() == "locked" and proc.returncode == -signal.SIGKILL
    assert (tmp_path / "run" / files.LOCK_NAME).is_file()
    RunLock(tmp_path / "run").acquire().release()


def test_a_second_training_of_a_run_refuses_to_start_and_touches_nothing(tiny_study, tmp_path, caplog):
    from vlpeft.train import main

    run = tmp_path / "run"
    cfg = make_run_config(tiny_study, run, task="vqa")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with RunLock(run):  # stands for a first training of this run, still going
        assert main(["--config", str(path)]) == 1
    assert f"{run} is in use by another training of this run: process {os.getpid()}" in caplog.text
    assert sorted(p.name for p in run.iterdir()) == [files.LOCK_NAME]  # no status, no log, no checkpoint


def test_yaml_mapping_reader_names_the_file_and_what_it_should_hold(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with pytest.raises(FileNotFoundError, match=f"^study config not found: {re.escape(str(path))}$"):
        files.read_yaml_mapping(path, "study config")
    with pytest.raises(FileNotFoundError, match="^config file not found: "):
        files.read_yaml_mapping(path, "study config", missing="config file not found")
    path.write_text("")
    assert files.read_yaml_mapping(path, "study config") == {}
    path.write_text("a: 1\nb: [2, 3]\n")
    assert files.read_yaml_mapping(path, "study config") == {"a": 1, "b": [2, 3]}
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"c\.yaml holds no study config \(a YAML mapping\), got list$"):
        files.read_yaml_mapping(path, "study config")
    path.write_text("a: [1\n")
    with pytest.raises(ValueError, match=r"(?s)c\.yaml is not valid YAML \(.*\); rerun it$") as e:
        files.read_yaml_mapping(path, "study config", remedy="rerun it")
    assert "while parsing" in str(e.value)
    path.write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(ValueError, match="is not valid YAML"):
        files.read_yaml_mapping(path, "study config")
