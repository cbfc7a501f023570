"""Verified, resumable, idempotent downloads and archive unpacking for the data pipeline.

The pipeline pulls tens of GB (COCO 2014 images, VQAv2 questions and annotations, the Karpathy splits, the mPLUG
checkpoint, the BERT vocabulary) onto a cluster's shared file system, where jobs die, connections drop and quotas
fill. The rules here are that a file under its final name is always complete and verified, and that work already
done is never repeated:

* :func:`download` streams into ``<dest>.part``, resumes it with an HTTP ``Range`` request after a dropped
  connection or a killed job, retries transient failures with exponential back-off, verifies size and digests, and
  only then ``fsync``s and atomically renames the part to its final name. An existing, verifying destination is
  returned without touching the network.
* :func:`unpack` extracts a zip or tar archive after refusing path-traversal members, checks the number of files,
  and writes a marker file last, so an interrupted unpack is redone and a completed one is skipped.
* :func:`md5sum` and :func:`sha256sum` hash large files in chunks.

A download without a known digest appends ``"<sha256>  <size>  <filename>  <url>"`` to a checksum record; commit that
file and later downloads of the same file name are verified against it (see :func:`read_checksum_record`).

One writer per destination is assumed (Snakemake runs one job per output); two processes resuming the same
``.part`` at once would interleave bytes, which the final verification then catches when a digest is known.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import ssl
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "ChecksumError",
    "DownloadError",
    "UnpackError",
    "download",
    "md5sum",
    "read_checksum_record",
    "sha256sum",
    "unpack",
]

LOGGER = logging.getLogger("vlpeft.download")

DEFAULT_CHUNK_SIZE = 1 << 20
_USER_AGENT = "vlpeft-download/0.1 (python urllib)"
_SCHEMES = ("http", "https", "file")
# 408 and 429 are the client-error codes that mean "try again later" rather than "this request is wrong".
_RETRYABLE_4XX = frozenset({408, 429})
# A server that keeps answering with an unusable range must not make us loop forever.
_MAX_RESTARTS = 3
# Progress lines: at least this far apart, and one at the latest after _LOG_MAX_INTERVAL or every _LOG_PCT_STEP.
_LOG_MIN_INTERVAL = 2.0
_LOG_MAX_INTERVAL = 30.0
_LOG_PCT_STEP = 5.0
_HEX = {"md5": re.compile(r"^[0-9a-f]{32}$"), "sha256": re.compile(r"^[0-9a-f]{64}$")}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)

ProgressCallback = Callable[[int, "int | None"], None]


class DownloadError(RuntimeError):
    """A download failed for good: a client error, exhausted retries, or a bad file."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected size or digest."""


class UnpackError(RuntimeError):
    """An archive could not be unpacked safely or did not hold the expected files."""


class _Retryable(Exception):
    """A transient failure (connection, timeout, dropped stream, 5xx): back off and resume."""


class _Restart(Exception):
    """The partial file cannot be resumed; it has been truncated and the next attempt starts from zero."""


class _RangeNotSatisfiable(Exception):
    """The server answered 416 (or a local file is shorter than the part); ``total`` is its size when known."""

    def __init__(self, total: int | None) -> None:
        super().__init__(total)
        self.total = total


# --------------------------------------------------------------------------------------------------------- hashing


def _new_hash(name: str) -> hashlib._Hash:
    # usedforsecurity=False keeps md5 usable on FIPS-enforcing cluster nodes; it is an integrity check here.
    return hashlib.new(name, usedforsecurity=False)


def _hash_file(path: str | Path, names: Iterable[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, str]:
    """Hash a file once with several algorithms.

    Args:
        path: File to hash.
        names: hashlib algorithm names, e.g. ``("md5", "sha256")``.
        chunk_size: Bytes read at a time.

    Returns:
        Algorithm name to lower-case hex digest.
    """
    hashes = {name: _new_hash(name) for name in names}
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def md5sum(path: str | Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    """Return the md5 hex digest of a file, read in chunks.

    Args:
        path: File to hash.
        chunk_size: Bytes read at a time.

    Returns:
        Lower-case hex digest.
    """
    return _hash_file(path, ("md5",), chunk_size)["md5"]


def sha256sum(path: str | Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    """Return the sha256 hex digest of a file, read in chunks.

    Args:
        path: File to hash.
        chunk_size: Bytes read at a time.

    Returns:
        Lower-case hex digest.
    """
    return _hash_file(path, ("sha256",), chunk_size)["sha256"]


class _StreamHashes:
    """Digests computed while streaming, valid only while they cover exactly the bytes on disk."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)
        self.reset()

    def reset(self) -> None:
        self._hashes = {name: _new_hash(name) for name in self.names}
        self.valid_upto: int | None = 0

    def invalidate(self) -> None:
        # Bytes on disk were written by another process or attempt we did not hash: re-hash the file at the end.
        self.valid_upto = None

    def update(self, chunk: bytes) -> None:
        if self.valid_upto is None:
            return
        for h in self._hashes.values():
            h.update(chunk)
        self.valid_upto += len(chunk)

    def digests(self, path: Path, size: int, chunk_size: int) -> dict[str, str]:
        if not self.names:
            return {}
        if self.valid_upto == size:
            return {name: h.hexdigest() for name, h in self._hashes.items()}
        LOGGER.info("re-hashing %s (%s) after a resumed download", path.name, _fmt_bytes(size))
        return _hash_file(path, self.names, chunk_size)


# ------------------------------------------------------------------------------------------------------- progress


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def _fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _Progress:
    """Rate-limited progress lines on the module logger plus an optional per-chunk callback."""

    def __init__(self, name: str, callback: ProgressCallback | None) -> None:
        self.name = name
        self.callback = callback
        self.total: int | None = None
        self.done = 0
        self._t0 = self._last_t = time.monotonic()
        self._base = self._last_done = 0

    def begin(self, done: int, total: int | None) -> None:
        """Start an attempt at byte ``done``; the speed counts only bytes moved in this attempt."""
        self.done, self.total = done, total
        self._t0 = self._last_t = time.monotonic()
        self._base = self._last_done = done
        if done:
            LOGGER.info("%s: resuming at %s of %s", self.name, _fmt_bytes(done), self._total_str())
        if self.callback is not None:
            self.callback(self.done, self.total)

    def advance(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)
        now = time.monotonic()
        since = now - self._last_t
        if since < _LOG_MIN_INTERVAL:
            return
        step = bool(self.total) and (self.done - self._last_done) * 100.0 / self.total >= _LOG_PCT_STEP
        if step or since >= _LOG_MAX_INTERVAL:
            self.log(now)

    def _total_str(self) -> str:
        return _fmt_bytes(self.total) if self.total is not None else "unknown size"

    def log(self, now: float | None = None, final: bool = False) -> None:
        now = time.monotonic() if now is None else now
        rate = (self.done - self._base) / max(now - self._t0, 1e-6)
        parts = [f"{self.name}: {_fmt_bytes(self.done)} / {self._total_str()}"]
        if self.total:
            parts[0] += f" ({100.0 * self.done / self.total:.1f}%)"
        parts.append(f"{rate / 1e6:.2f} MB/s")
        if self.total and rate > 0 and not final:
            parts.append(f"ETA {_fmt_duration((self.total - self.done) / rate)}")
        if final:
            parts.append("done")
        LOGGER.info(", ".join(parts))
        self._last_t, self._last_done = now, self.done


# ------------------------------------------------------------------------------------------------- checksum record


def read_checksum_record(path: str | Path) -> dict[str, tuple[str, int]]:
    """Read a checksum record written by :func:`download`.

    Lines are ``"<sha256>  <size>  <filename>  <url>"``; blank lines and lines starting with ``#`` are ignored, and a
    later line for the same file name wins.

    Args:
        path: The record file.

    Returns:
        File name to ``(sha256, size)``.

    Raises:
        FileNotFoundError: If the record does not exist.
        ValueError: If a line is malformed (the message gives the line number).
    """
    path = Path(path)
    entries: dict[str, tuple[str, int]] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # Split from both ends so a file name that itself contains spaces survives; URLs never contain spaces.
        head = line.split("  ", 2)
        if len(head) != 3 or "  " not in head[2]:
            raise ValueError(f"{path}:{lineno}: expected '<sha256>  <size>  <filename>  <url>', got {raw!r}")
        digest, size_str, rest = head
        filename, _url = rest.rsplit("  ", 1)
        digest, filename = digest.strip().lower(), filename.strip()
        if not _HEX["sha256"].match(digest) or not size_str.strip().isdigit() or not filename:
            raise ValueError(f"{path}:{lineno}: bad sha256, size or file name in {raw!r}")
        entries[filename] = (digest, int(size_str))
    return entries


def _append_checksum_record(record: Path, digest: str, size: int, filename: str, url: str) -> None:
    line = f"{digest}  {size}  {filename}  {url}\n"
    if "\n" in line[:-1]:
        raise ValueError(f"cannot record a file name or URL containing a newline: {filename!r}, {url!r}")
    record.parent.mkdir(parents=True, exist_ok=True)
    # One O_APPEND write per line, so parallel downloads recording into the same file do not interleave lines.
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------------- download


def _check_digest(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not _HEX[name].match(value):
        raise ValueError(f"{name} must be a hex digest, got {value!r}")
    return value


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every file system lets a directory be opened, so this is best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _verify_existing(dest: Path, md5: str | None, sha256: str | None, size: int | None, chunk_size: int) -> bool:
    actual_size = dest.stat().st_size
    if size is not None and actual_size != size:
        LOGGER.warning("%s exists but has %d bytes, expected %d", dest, actual_size, size)
        return False
    names = [n for n, v in (("md5", md5), ("sha256", sha256)) if v]
    if not names:
        return True
    LOGGER.info("verifying existing %s (%s)", dest, _fmt_bytes(actual_size))
    actual = _hash_file(dest, names, chunk_size)
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected and actual[name] != expected:
            LOGGER.warning("%s exists but its %s is %s, expected %s", dest, name, actual[name], expected)
            return False
    return True


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None
    start, end, total = match.groups()
    return int(start), int(end), None if total == "*" else int(total)


class _Transfer:
    """State of one download across its attempts: the part file, stream hashes, the known total size."""

    def __init__(
        self,
        url: str,
        dest: Path,
        *,
        size: int | None,
        timeout: float,
        chunk_size: int,
        hash_names: Iterable[str],
        progress: _Progress,
    ) -> None:
        self.url = url
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.size = size
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.hashes = _StreamHashes(hash_names)
        self.progress = progress
        self.total: int | None = size
        parts = urllib.parse.urlsplit(url)
        self.is_file = parts.scheme.lower() == "file"
        self.src_path = Path(urllib.request.url2pathname(parts.path)) if self.is_file else None

    def part_size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def truncate(self) -> None:
        with open(self.part, "wb"):
            pass
        self.hashes.reset()

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)

    # A source yields (readable stream, byte offset its first byte belongs at, total size if known).

    def _open_http(self, offset: int) -> tuple[BinaryIO, int, int | None]:
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            content_range = exc.headers.get("Content-Range") if exc.headers is not None else None
            exc.close()
            if exc.code == 416:
                match = _UNSATISFIED_RANGE.match(content_range or "")
                raise _RangeNotSatisfiable(int(match.group(1)) if match else None) from None
            if exc.code >= 500 or exc.code in _RETRYABLE_4XX:
                raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
            raise DownloadError(f"HTTP {exc.code} {exc.reason} for {self.url}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise DownloadError(f"TLS certificate verification failed for {self.url}: {exc.reason}") from exc
            raise _Retryable(f"cannot connect: {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"request failed: {exc!r}") from exc
        status = response.status
        if status == 206:
            parsed = _parse_content_range(response.headers.get("Content-Range"))
            if parsed is None:
                response.close()
                self.truncate()
                raise _Restart(
                    f"206 response without a usable Content-Range ({response.headers.get('Content-Range')})"
                )
            start, _end, total = parsed
            return response, start, total
        if status == 200:
            length = response.headers.get("Content-Length", "").strip()
            return response, 0, int(length) if length.isdigit() else None
        response.close()
        raise DownloadError(f"unexpected HTTP {status} for {self.url}")

    def _open_file(self, offset: int) -> tuple[BinaryIO, int, int | None]:
        try:
            stream = open(self.src_path, "rb")  # noqa: SIM115 - the caller closes it with a with-block
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            raise DownloadError(f"cannot read {self.url}: {exc.strerror or exc}") from exc
        except OSError as exc:
            raise _Retryable(f"cannot open {self.src_path}: {exc!r}") from exc
        total = os.fstat(stream.fileno()).st_size
        if offset and offset >= total:
            stream.close()
            raise _RangeNotSatisfiable(total)
        stream.seek(offset)
        return stream, offset, total

    def attempt(self) -> None:
        """Bring the part file up to the full length once; raise _Retryable or _Restart when that fails."""
        offset = self.part_size()
        if self.size is not None and offset > self.size:
            LOGGER.warning("%s is larger than the expected %d bytes; starting over", self.part, self.size)
            self.truncate()
            offset = 0
        if offset and offset == self.size:
            # Everything is already on disk (the job died between the last byte and the rename): just verify.
            self.total = self.size
            return
        try:
            stream, start, total = self._open_file(offset) if self.is_file else self._open_http(offset)
        except _RangeNotSatisfiable as exc:
            if offset and exc.total == offset:
                LOGGER.info("%s: partial file already complete (%d bytes)", self.dest.name, offset)
                self.total = offset
                return
            self.truncate()
            raise _Restart(f"range {offset}- not satisfiable (size {exc.total}); starting over") from None
        with stream:
            if start != offset:
                if start != 0:
                    self.truncate()
                    raise _Restart(f"asked for bytes from {offset}, server sent from {start}; starting over")
                LOGGER.info("%s: server ignored the Range request; downloading from the start", self.dest.name)
            if self.size is not None and total is not None and total != self.size:
                self.discard()
                raise ChecksumError(
                    f"size mismatch for {self.dest} from {self.url}: expected {self.size} bytes, server reports {total}"
                )
            self.total = total if total is not None else self.size
            if start == 0:
                self.hashes.reset()
            elif self.hashes.valid_upto != start:
                self.hashes.invalidate()
            self.progress.begin(start, self.total)
            position = start
            with open(self.part, "ab" if start else "wb") as out:
                while True:
                    try:
                        chunk = stream.read(self.chunk_size)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(f"connection lost after {position} bytes: {exc!r}") from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    self.hashes.update(chunk)
                    position += len(chunk)
                    self.progress.advance(len(chunk))
        if self.total is None:
            # No length announced (chunked transfer): http.client raises on a broken chunked stream, so EOF is the end.
            self.total = position
        elif position < self.total:
            # http.client returns EOF rather than raising when a connection closes before Content-Length is reached.
            raise _Retryable(f"connection closed after {position} of {self.total} bytes")


def download(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    checksum_record: str | Path | None = None,
    progress: ProgressCallback | None = None,
    max_backoff: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download ``url`` to ``dest`` so that ``dest`` only ever appears complete and verified.

    If ``dest`` exists and matches every known size and digest it is returned without any network access; if it
    exists but does not match, it is moved aside to ``<dest>.corrupt`` (never silently deleted) and downloaded again.
    Bytes stream into ``<dest>.part``; an existing part is resumed with ``Range: bytes=N-`` (a ``206`` with a matching
    ``Content-Range`` is appended, a ``200`` restarts from zero, a ``416`` for a complete part goes straight to
    verification). Connection errors, timeouts, streams dropped before ``Content-Length`` and ``5xx``/``408``/``429``
    answers are retried with back-off ``min(backoff * 2**k, max_backoff)`` seconds, resuming from the bytes on disk.
    Once complete, the part is checked against ``size`` (or the announced length) and the digests; on a mismatch it
    is deleted and :class:`ChecksumError` raised. Only a verified part is ``fsync``ed and atomically renamed.

    Without ``md5``/``sha256``, a ``checksum_record`` entry for ``dest.name`` is used as the expected sha256 and size
    (the record pins the file); with no such entry the sha256 of the new file is appended to the record.

    Args:
        url: ``http://``, ``https://`` or ``file://`` URL (the last for cluster mirrors, with the same verification).
        dest: Final path of the file; parent directories are created.
        md5: Expected md5 hex digest.
        sha256: Expected sha256 hex digest.
        size: Expected size in bytes.
        retries: Consecutive failed attempts tolerated; an attempt that gets further into the file than any before it
            resets the count, so a long download on a flaky link is not abandoned while it is still progressing.
        backoff: Base back-off in seconds.
        timeout: Socket timeout in seconds for connecting and for each read.
        chunk_size: Bytes per read and write.
        checksum_record: File of ``"<sha256>  <size>  <filename>  <url>"`` lines (see :func:`read_checksum_record`).
        progress: Called as ``progress(bytes_done, total_or_None)`` after every chunk.
        max_backoff: Upper bound on one back-off sleep in seconds.
        sleep: Sleep function, injectable so tests need not wait.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: For an unsupported URL scheme, a malformed digest, or a size that contradicts the record.
        DownloadError: For a client error (the message names the HTTP status and URL) or exhausted retries.
        ChecksumError: When the size or a digest does not match; nothing is left under ``dest`` or ``<dest>.part``.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}; expected one of {', '.join(_SCHEMES)}")
    if scheme == "file" and urllib.parse.urlsplit(url).netloc not in ("", "localhost"):
        raise ValueError(f"file URL with a remote host is not supported: {url!r}")
    md5, sha256 = _check_digest("md5", md5), _check_digest("sha256", sha256)
    if size is not None and size < 0:
        raise ValueError(f"size must be non-negative, got {size}")
    dest = Path(dest)
    record = Path(checksum_record) if checksum_record is not None else None

    record_new = False
    if md5 is None and sha256 is None and record is not None:
        pinned = read_checksum_record(record).get(dest.name) if record.is_file() else None
        if pinned is not None:
            sha256, pinned_size = pinned
            if size is not None and size != pinned_size:
                raise ValueError(f"size={size} contradicts {record}, which pins {dest.name} at {pinned_size} bytes")
            size = pinned_size
        else:
            record_new = True

    if dest.exists():
        if _verify_existing(dest, md5, sha256, size, chunk_size):
            LOGGER.info("%s already present and verified; not downloading", dest)
            return dest
        aside = dest.with_name(dest.name + ".corrupt")
        os.replace(dest, aside)
        LOGGER.warning("moved mismatching %s to %s; downloading again", dest, aside)

    dest.parent.mkdir(parents=True, exist_ok=True)
    hash_names = [n for n, v in (("md5", md5), ("sha256", sha256)) if v]
    if record_new:
        hash_names.append("sha256")
    transfer = _Transfer(
        url,
        dest,
        size=size,
        timeout=timeout,
        chunk_size=chunk_size,
        hash_names=hash_names,
        progress=_Progress(dest.name, progress),
    )
    LOGGER.info("downloading %s -> %s", url, dest)

    failures = restarts = 0
    high_water = transfer.part_size()
    while True:
        try:
            transfer.attempt()
            break
        except _Restart as exc:
            restarts += 1
            if restarts > _MAX_RESTARTS:
                raise DownloadError(f"giving up on {url}: {exc}") from None
            LOGGER.warning("%s: %s", dest.name, exc)
        except _Retryable as exc:
            on_disk = transfer.part_size()
            if on_disk > high_water:
                high_water, failures = on_disk, 0
            if failures >= retries:
                raise DownloadError(
                    f"giving up on {url} after {failures + 1} failed attempts ({on_disk} bytes kept in "
                    f"{transfer.part.name} for a later resume): {exc}"
                ) from exc
            delay = min(backoff * 2**failures, max_backoff)
            failures += 1
            LOGGER.warning("%s: %s; retry %d/%d in %.1f s", dest.name, exc, failures, retries, delay)
            sleep(delay)

    part = transfer.part
    actual_size = transfer.part_size()
    expected_size = size if size is not None else transfer.total
    if expected_size is not None and actual_size != expected_size:
        transfer.discard()
        raise ChecksumError(
            f"size mismatch for {dest} from {url}: expected {expected_size} bytes, got {actual_size}; partial deleted"
        )
    digests = transfer.hashes.digests(part, actual_size, chunk_size)
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected and digests[name] != expected:
            transfer.discard()
            raise ChecksumError(
                f"{name} mismatch for {dest} from {url}: expected {expected}, got {digests[name]}; partial deleted"
            )

    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    transfer.progress.done = actual_size
    transfer.progress.log(final=True)

    if record_new and record is not None:
        _append_checksum_record(record, digests["sha256"], actual_size, dest.name, url)
        LOGGER.info("recorded sha256 %s of %s in %s", digests["sha256"], dest.name, record)
    return dest


# --------------------------------------------------------------------------------------------------------- unpack


def _unsafe_name(name: str) -> bool:
    normalized = name.replace("\\", "/")
    return (
        normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized) is not None or ".." in normalized.split("/")
    )


def _zip_members(zf: zipfile.ZipFile, archive: Path) -> list[tuple[str, bool]]:
    members = []
    for info in zf.infolist():
        if _unsafe_name(info.filename):
            raise UnpackError(
                f"refusing to unpack {archive}: member {info.filename!r} is an absolute path or has '..'"
            )
        members.append((info.filename, not info.is_dir()))
    return members


def _tar_members(tf: tarfile.TarFile, archive: Path) -> list[tuple[str, bool]]:
    members = []
    for info in tf.getmembers():
        if _unsafe_name(info.name):
            raise UnpackError(f"refusing to unpack {archive}: member {info.name!r} is an absolute path or has '..'")
        if info.issym() or info.islnk():
            # Symlink targets are relative to the link's directory, hard-link targets to the archive root.
            base = posixpath.dirname(info.name) if info.issym() else ""
            target = posixpath.normpath(posixpath.join(base, info.linkname))
            if info.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise UnpackError(
                    f"refusing to unpack {archive}: link {info.name!r} -> {info.linkname!r} points outside"
                )
        elif not (info.isfile() or info.isdir()):
            raise UnpackError(f"refusing to unpack {archive}: member {info.name!r} is a device or fifo")
        members.append((info.name, info.isfile()))
    return members


def _refuse_existing_links(
    dest_dir: Path, members: list[tuple[str, bool]], archive: Path, own_links: frozenset[str] = frozenset()
) -> None:
    """Refuse to write through a symbolic link that already exists inside ``dest_dir``: extraction would follow it
    and write outside (a planted ``train2014 -> /home/user`` or ``a.jpg -> ~/.bashrc``). A tar's own link members
    may be replaced (``own_links``); links above ``dest_dir`` itself (a data disk) are the user's choice."""
    seen: set[str] = set()
    for name, _ in members:
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        for k in range(1, len(parts) + 1):
            rel = "/".join(parts[:k])
            if rel in seen:
                continue
            seen.add(rel)
            path = dest_dir / rel
            if path.is_symlink() and not (k == len(parts) and rel in own_links):
                raise UnpackError(
                    f"refusing to unpack {archive}: {path} is a symbolic link (to {os.readlink(path)}) that member "
                    f"{name!r} would be written through; remove the link or unpack into a clean directory"
                )


def _is_tar_name(name: str) -> bool:
    return name.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"))


def unpack(
    archive: str | Path,
    dest_dir: str | Path,
    *,
    expected_files: int | None = None,
    member_glob: str | None = None,
    marker: str | None = None,
) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest_dir``, once, safely and checked.

    Several archives share one destination (``train2014.zip`` and ``val2014.zip`` both go under the COCO directory),
    so members are extracted in place rather than renamed in as a whole directory; completion is recorded by a
    marker file ``dest_dir/.unpacked-<archive name>`` written last and atomically. Without the marker an unpack counts
    as interrupted and is redone (files are overwritten); with it the call returns at once, even if the archive has
    since been deleted to save space. A marker for a different archive size (a re-downloaded archive) is ignored.

    Every member is checked before anything is written: absolute paths, ``..`` components, links pointing outside,
    device files, and symbolic links already inside ``dest_dir`` that a member would be written through are refused.

    Args:
        archive: The archive file.
        dest_dir: Directory to extract into; created if missing.
        expected_files: Number of regular files the archive must yield (counted on disk after extraction).
        member_glob: Only count regular files whose archive path matches this glob (e.g. ``"*.jpg"``); all members
            are extracted regardless.
        marker: Marker file name inside ``dest_dir``, instead of ``.unpacked-<archive name>``.

    Returns:
        ``dest_dir`` as a :class:`~pathlib.Path`.

    Raises:
        UnpackError: For an unsafe member, an unknown archive format, or a file count other than ``expected_files``.
        FileNotFoundError: If the archive is missing and no completed unpack is recorded.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker_path = dest_dir / (marker or f".unpacked-{archive.name}")
    if marker_path.is_file():
        try:
            recorded_size = json.loads(marker_path.read_text(encoding="utf-8")).get("archive_size")
        except (ValueError, AttributeError):
            recorded_size = None
        if not archive.exists() or recorded_size == archive.stat().st_size:
            LOGGER.info("%s already unpacked into %s (marker %s)", archive.name, dest_dir, marker_path.name)
            return dest_dir
        LOGGER.warning("%s differs from the archive recorded in %s; unpacking again", archive, marker_path)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")

    dest_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    extract_kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    LOGGER.info("unpacking %s into %s", archive, dest_dir)
    if not _is_tar_name(archive.name) and zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = _zip_members(zf, archive)
            _refuse_existing_links(dest_dir, members, archive)
            zf.extractall(dest_dir)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            members = _tar_members(tf, archive)
            links = frozenset(m.name.rstrip("/") for m in tf.getmembers() if m.issym() or m.islnk())
            _refuse_existing_links(dest_dir, members, archive, links)
            try:
                tf.extractall(dest_dir, **extract_kwargs)
            except tarfile.TarError as exc:
                raise UnpackError(f"refusing to unpack {archive}: {exc}") from exc
    else:
        raise UnpackError(f"{archive} is neither a zip nor a tar archive")

    found = sum(
        1
        for name, regular in members
        if regular and (member_glob is None or fnmatch.fnmatchcase(name, member_glob)) and (dest_dir / name).is_file()
    )
    if expected_files is not None and found != expected_files:
        what = f"files matching {member_glob!r}" if member_glob else "files"
        raise UnpackError(f"{archive} into {dest_dir}: expected {expected_files} {what}, found {found}")

    info = {
        "archive": archive.name,
        "archive_size": archive.stat().st_size,
        "files": found,
        "member_glob": member_glob,
        "unpacked_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = marker_path.with_name(marker_path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, marker_path)
    LOGGER.info("unpacked %d files from %s in %s", found, archive.name, _fmt_duration(time.monotonic() - started))
    return dest_dir
