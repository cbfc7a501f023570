"""Tests for vlpeft.data.download against a local HTTP server with injectable faults (no internet)."""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import random
import re
import tarfile
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vlpeft.data.download import (
    ChecksumError,
    DownloadError,
    UnpackError,
    download,
    md5sum,
    read_checksum_record,
    sha256sum,
    unpack,
)
from tests.conftest import RangeServer

DATA = random.Random(20240501).randbytes(300_000)
DATA_MD5 = hashlib.md5(DATA).hexdigest()
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()
# Small chunks so the read loop, hashing and resume logic run many times on a 300 KB file.
FAST = {"timeout": 2.0, "chunk_size": 16 * 1024, "backoff": 0.001}


@pytest.fixture
def server(http_server: RangeServer) -> RangeServer:
    http_server.files["/data.bin"] = DATA
    return http_server


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# ------------------------------------------------------------------------------------------------------- download


def test_download_verifies_md5_and_sha256(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "data.bin"
    out = download(server.url("/data.bin"), dest, md5=DATA_MD5, sha256=DATA_SHA256, size=len(DATA), **FAST)
    assert out == dest
    assert dest.read_bytes() == DATA
    assert not _part(dest).exists()
    assert len(server.requests) == 1 and server.requests[0]["range"] is None


def test_dropped_connection_resumes_with_range(server: RangeServer, tmp_path: Path) -> None:
    server.faults = ["drop"]
    sleeps: list[float] = []
    dest = tmp_path / "data.bin"
    download(server.url("/data.bin"), dest, md5=DATA_MD5, sleep=sleeps.append, **FAST)
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 2
    resumed_at = len(DATA) // 2
    assert server.requests[1]["range"] == f"bytes={resumed_at}-"
    assert len(sleeps) == 1
    assert not _part(dest).exists()


def test_read_timeout_mid_file_resumes(server: RangeServer, tmp_path: Path) -> None:
    server.faults = ["stall"]
    dest = tmp_path / "data.bin"
    started = time.monotonic()
    download(server.url("/data.bin"), dest, sha256=DATA_SHA256, sleep=lambda s: None, **{**FAST, "timeout": 0.3})
    assert time.monotonic() - started < 3
    assert dest.read_bytes() == DATA
    # The read that timed out loses its partly filled chunk, so the resume point is the last whole chunk on disk.
    resumed_at = int(server.requests[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(DATA) // 2


def test_wrong_md5_raises_checksum_error_and_leaves_nothing(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as info:
        download(server.url("/data.bin"), dest, md5=wrong, **FAST)
    message = str(info.value)
    assert str(dest) in message and wrong in message and DATA_MD5 in message
    assert not dest.exists()
    assert not _part(dest).exists()
    assert list(tmp_path.iterdir()) == []


def test_404_raises_download_error_without_retry(server: RangeServer, tmp_path: Path) -> None:
    url = server.url("/missing.bin")
    sleeps: list[float] = []
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "missing.bin", sleep=sleeps.append, **FAST)
    assert not isinstance(info.value, ChecksumError)
    assert "404" in str(info.value) and url in str(info.value)
    assert len(server.requests) == 1
    assert sleeps == []
    assert not (tmp_path / "missing.bin").exists()


def test_server_ignoring_range_restarts_from_zero(server: RangeServer, tmp_path: Path) -> None:
    server.faults = ["drop"]
    server.ignore_range = True
    dest = tmp_path / "data.bin"
    download(server.url("/data.bin"), dest, md5=DATA_MD5, sleep=lambda s: None, **FAST)
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 2
    assert server.requests[1]["range"] is not None  # it asked to resume, got a 200 with the whole body


def test_500_twice_then_success(server: RangeServer, tmp_path: Path) -> None:
    server.faults = ["500", "500"]
    sleeps: list[float] = []
    dest = tmp_path / "data.bin"
    download(server.url("/data.bin"), dest, sha256=DATA_SHA256, backoff=0.5, sleep=sleeps.append, timeout=2.0)
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 3
    assert sleeps == [0.5, 1.0]  # exponential back-off


def test_persistent_500_gives_up_after_retries_with_capped_backoff(server: RangeServer, tmp_path: Path) -> None:
    server.faults = ["500"] * 10
    sleeps: list[float] = []
    with pytest.raises(DownloadError, match="giving up"):
        download(
            server.url("/data.bin"), tmp_path / "d.bin", retries=3, backoff=1.0, max_backoff=3.0, sleep=sleeps.append
        )
    assert len(server.requests) == 4
    assert sleeps == [1.0, 2.0, 3.0]


def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens on this port any more
    sleeps: list[float] = []
    with pytest.raises(DownloadError):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=2, sleep=sleeps.append, **FAST)
    assert len(sleeps) == 2


def test_existing_destination_makes_no_request(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(DATA)
    assert download(server.url("/data.bin"), dest, md5=DATA_MD5, size=len(DATA), **FAST) == dest
    assert download(server.url("/data.bin"), dest, **FAST) == dest  # no checksum: trust the atomic rename
    assert server.requests == []


def test_existing_corrupt_destination_is_moved_aside_and_fetched_again(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"truncated")
    download(server.url("/data.bin"), dest, md5=DATA_MD5, **FAST)
    assert dest.read_bytes() == DATA
    assert (tmp_path / "data.bin.corrupt").read_bytes() == b"truncated"
    assert len(server.requests) == 1


def test_part_left_by_killed_job_is_resumed_and_rehashed(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(DATA[:100_000])
    download(server.url("/data.bin"), dest, md5=DATA_MD5, sha256=DATA_SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert server.requests[0]["range"] == "bytes=100000-"


def test_corrupt_part_from_earlier_job_is_caught(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(b"\0" * 100_000)
    with pytest.raises(ChecksumError):
        download(server.url("/data.bin"), dest, md5=DATA_MD5, **FAST)
    assert not dest.exists() and not _part(dest).exists()


def test_complete_part_answered_with_416_is_verified_and_finished(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(DATA)
    download(server.url("/data.bin"), dest, md5=DATA_MD5, **FAST)
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 1 and server.requests[0]["range"] == f"bytes={len(DATA)}-"


def test_complete_part_with_known_size_needs_no_request(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(DATA)
    download(server.url("/data.bin"), dest, md5=DATA_MD5, size=len(DATA), **FAST)
    assert dest.read_bytes() == DATA and server.requests == []


def test_size_mismatch_reported_by_server_fails_early(server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumError, match=str(len(DATA) + 1)):
        download(server.url("/data.bin"), dest, size=len(DATA) + 1, **FAST)
    assert not dest.exists() and not _part(dest).exists()


def test_checksum_record_written_parseable_and_then_pins(server: RangeServer, tmp_path: Path) -> None:
    record = tmp_path / "checksums.txt"
    url = server.url("/data.bin")
    download(url, tmp_path / "a" / "data.bin", checksum_record=record, **FAST)
    lines = record.read_text().splitlines()
    assert lines == [f"{DATA_SHA256}  {len(DATA)}  data.bin  {url}"]
    assert read_checksum_record(record) == {"data.bin": (DATA_SHA256, len(DATA))}

    # A second copy of the same file verifies against the pin and does not append a duplicate line.
    download(url, tmp_path / "b" / "data.bin", checksum_record=record, **FAST)
    assert len(record.read_text().splitlines()) == 1

    # Upstream changed the bytes: the pinned record catches it.
    server.files["/data.bin"] = DATA[::-1]
    with pytest.raises(ChecksumError):
        download(url, tmp_path / "c" / "data.bin", checksum_record=record, **FAST)
    assert not (tmp_path / "c" / "data.bin").exists()


def test_read_checksum_record_skips_comments_and_rejects_garbage(tmp_path: Path) -> None:
    record = tmp_path / "checksums.txt"
    digest = "a" * 64
    record.write_text(f"# pinned downloads\n\n{digest}  12  my file.txt  http://x/my%20file.txt\n")
    assert read_checksum_record(record) == {"my file.txt": (digest, 12)}
    record.write_text("not a record line\n")
    with pytest.raises(ValueError, match=":1:"):
        read_checksum_record(record)


def test_file_url_is_copied_with_verification_and_resume(tmp_path: Path) -> None:
    source = tmp_path / "mirror" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(DATA)
    dest = tmp_path / "out" / "data.bin"
    dest.parent.mkdir()
    _part(dest).write_bytes(DATA[:12_345])
    download(source.as_uri(), dest, md5=DATA_MD5, size=len(DATA), **FAST)
    assert dest.read_bytes() == DATA and not _part(dest).exists()
    with pytest.raises(DownloadError, match="missing"):
        download((tmp_path / "missing").as_uri(), tmp_path / "m", **FAST)


@pytest.mark.parametrize("url", ["ftp://example.org/a.zip", "s3://bucket/a.zip", "data.zip"])
def test_unsupported_scheme_is_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scheme"):
        download(url, tmp_path / "a.zip")


def test_malformed_digest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="md5"):
        download("http://127.0.0.1:9/a", tmp_path / "a", md5="xyz")


def test_progress_callback_and_log(server: RangeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[int, int | None]] = []
    with caplog.at_level(logging.INFO, logger="vlpeft.download"):
        download(server.url("/data.bin"), tmp_path / "data.bin", progress=lambda d, t: calls.append((d, t)), **FAST)
    assert calls[-1] == (len(DATA), len(DATA))
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(calls))
    assert any("MB/s" in r.getMessage() and "data.bin" in r.getMessage() for r in caplog.records)


def test_md5sum_and_sha256sum(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    assert md5sum(path, chunk_size=4096) == DATA_MD5
    assert sha256sum(path) == DATA_SHA256


# --------------------------------------------------------------------------------------------------------- unpack


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _make_tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            payload = data.get(info.name, b"")
            info.size = len(payload) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return path


IMAGES = {f"train2014/COCO_train2014_{i:012d}.jpg": bytes([i]) * 10 for i in range(5)}
IMAGES["train2014/README.txt"] = b"readme"


def test_unpack_zip_counts_marks_and_skips_second_time(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "train2014.zip", IMAGES)
    dest = tmp_path / "coco"
    assert unpack(archive, dest, expected_files=6) == dest
    assert (dest / "train2014" / "COCO_train2014_000000000003.jpg").read_bytes() == bytes([3]) * 10
    assert (dest / ".unpacked-train2014.zip").is_file()

    # A completed unpack is skipped: a deleted file is not restored, even when the archive is gone.
    (dest / "train2014" / "README.txt").unlink()
    unpack(archive, dest, expected_files=6)
    assert not (dest / "train2014" / "README.txt").exists()
    archive.unlink()
    unpack(archive, dest, expected_files=6)


def test_unpack_counts_only_member_glob(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "train2014.zip", IMAGES)
    unpack(archive, tmp_path / "coco", expected_files=5, member_glob="*.jpg", marker=".done")
    assert (tmp_path / "coco" / ".done").is_file()


def test_unpack_wrong_count_raises_and_leaves_no_marker(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "val2014.zip", IMAGES)
    dest = tmp_path / "coco"
    with pytest.raises(UnpackError, match=r"expected 7 files matching '\*\.jpg', found 5"):
        unpack(archive, dest, expected_files=7, member_glob="*.jpg")
    assert not (dest / ".unpacked-val2014.zip").exists()


def test_unpack_interrupted_is_redone(tmp_path: Path) -> None:
    archive = _make_zip(tmp_path / "caption_datasets.zip", {"dataset_coco.json": b"{}"})
    dest = tmp_path / "karpathy"
    dest.mkdir()
    (dest / "dataset_coco.json").write_bytes(b"{")  # a half-written file from a killed job, no marker
    unpack(archive, dest, expected_files=1)
    assert (dest / "dataset_coco.json").read_bytes() == b"{}"


@pytest.mark.parametrize("bad", ["../evil.txt", "ok/../../evil.txt", "/abs/evil.txt"])
def test_unpack_zip_refuses_path_traversal(tmp_path: Path, bad: str) -> None:
    archive = _make_zip(tmp_path / "bad.zip", {"fine.txt": b"x", bad: b"pwned"})
    dest = tmp_path / "out" / "inner"
    with pytest.raises(UnpackError, match="refusing"):
        unpack(archive, dest)
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (dest / "fine.txt").exists()  # checked before anything is written
    assert not (dest / ".unpacked-bad.zip").exists()


def test_unpack_tar_gz_and_refuses_traversal_and_escaping_links(tmp_path: Path) -> None:
    good = tarfile.TarInfo("vqa/questions.json")
    archive = _make_tar(tmp_path / "vqa.tar.gz", [good], {"vqa/questions.json": b"[]"})
    unpack(archive, tmp_path / "ok", expected_files=1)
    assert (tmp_path / "ok" / "vqa" / "questions.json").read_bytes() == b"[]"

    traversal = _make_tar(tmp_path / "t1.tar.gz", [tarfile.TarInfo("../evil.txt")], {"../evil.txt": b"x"})
    with pytest.raises(UnpackError, match="refusing"):
        unpack(traversal, tmp_path / "bad1")

    link = tarfile.TarInfo("link")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../etc/passwd"
    with pytest.raises(UnpackError, match="points outside"):
        unpack(_make_tar(tmp_path / "t2.tar.gz", [link]), tmp_path / "bad2")
    assert not (tmp_path / "bad2" / "link").exists()


def test_unpack_rejects_non_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not an archive")
    with pytest.raises(UnpackError, match="neither"):
        unpack(junk, tmp_path / "out")


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("planted", ["train2014", "train2014/COCO_train2014_000000000003.jpg"])
def test_unpack_never_writes_through_a_symlink_already_in_the_destination(
    tmp_path: Path, kind: str, planted: str
) -> None:
    """A link planted inside the destination (a directory or a file the archive holds) would make extraction write
    outside it: refused before anything is written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "COCO_train2014_000000000003.jpg").write_bytes(b"precious")
    dest = tmp_path / "coco"
    (dest / "train2014").mkdir(parents=True)
    if planted == "train2014":
        (dest / "train2014").rmdir()
        (dest / "train2014").symlink_to(outside)
    else:
        (dest / planted).symlink_to(outside / "COCO_train2014_000000000003.jpg")
    if kind == "zip":
        archive = _make_zip(tmp_path / "train2014.zip", IMAGES)
    else:
        infos = [tarfile.TarInfo(name) for name in IMAGES]
        archive = _make_tar(tmp_path / "train2014.tar.gz", infos, IMAGES)
    with pytest.raises(UnpackError, match=re.escape(f"{dest / planted} is a symbolic link (to {outside}")):
        unpack(archive, dest, expected_files=6)
    assert sorted(p.name for p in outside.iterdir()) == ["COCO_train2014_000000000003.jpg"]
    assert (outside / "COCO_train2014_000000000003.jpg").read_bytes() == b"precious"
    assert not (dest / f".unpacked-{archive.name}").exists()
