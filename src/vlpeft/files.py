"""Reading and guarding the files a run depends on: content digests, safe loads that name the file, the run lock.

Content digests. A resumed run must be the run its checkpoint started, so the checkpoint records the sha256 of
every input file the run reads (initial weights, subset, prepared records, vocabulary) and a resume compares them.
Hashing a ~1 GB initial checkpoint at every start of 810 runs would be slow, so each digest is kept in a sidecar
``<file>.digest.json`` (sha256, size, mtime_ns, when it was taken). The stage that writes a file records it
(:func:`record_digest`); a reader (:func:`content_digest`) trusts the sidecar only while the file's size, mtime_ns
and inode are the recorded ones and the file had not been modified within ``RACY_NS`` before the digest was taken
(as git does for its "racily clean" index entries: a same-size rewrite within one tick of a coarse file-system clock
keeps the mtime). Otherwise it hashes the file again and rewrites the sidecar. So a file rewritten by hand, by a
rerun stage or by a copy is hashed again; an untouched one is hashed once. A stage writing a large file waits out
that window before taking its digest (at most ``RACY_NS``), so that the many runs reading it trust the sidecar from
the start; small files are simply hashed again by their first reader. (Clocks are assumed to agree within
``RACY_NS``: on a network file system whose server clock runs ahead, rewriting a file within that skew of its digest
could go unnoticed.)

Safe loads. Every file the project reads is read without executing code (``torch.load(weights_only=True)``,
safetensors, JSON, YAML's safe loader), and a file that cannot be read is a :class:`CorruptFileError` (a
``ValueError``) naming the file and saying what to do, not a bare ``EOFError`` or ``JSONDecodeError``.

The run lock. A training run holds an exclusive ``flock`` on ``<run dir>/.run.lock`` for its lifetime
(:class:`RunLock`); the kernel releases it when the process ends, however it ends, so a crashed run's lock is never
stale. A second start on the same directory fails at once and names the holder (pid, host, start time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger("vlpeft.files")

DIGEST_SUFFIX = ".digest.json"
# A digest taken less than this long after the file's last modification is re-checked by the next reader.
RACY_NS = 2_000_000_000
# From this size on, record_digest waits until the file is RACY_NS old rather than leave the hashing to its readers.
LARGE_BYTES = 64 << 20
LOCK_NAME = ".run.lock"
_CHUNK = 1 << 22


class CorruptFileError(ValueError):
    """A file that exists but cannot be read (truncated, empty, binary, not the expected format)."""


class UnsafeFileError(ValueError):
    """A pickle holding objects other than tensors and plain containers: loading it could execute code."""


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock."""


# -- content digests ----------------------------------------------------------------------------------------------
def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def record_digest(path: str | Path) -> str:
    """Hash ``path`` now and write its sidecar; returns the sha256 (hex). Stages call this on the files they write.

    A sidecar that cannot be written (read-only directory) is only a warning: readers then hash the file each time.
    """
    path = Path(path)
    st = path.stat()
    wait_ns = st.st_mtime_ns + RACY_NS - time.time_ns()
    if st.st_size >= LARGE_BYTES and wait_ns > 0:
        time.sleep(wait_ns / 1e9 + 0.01)
    for _ in range(3):
        before = path.stat()
        checked_ns = time.time_ns()
        digest = _sha256(path)
        after = path.stat()
        if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
            break
    else:
        raise RuntimeError(f"{path} kept changing while it was being hashed; is another job writing it?")
    entry = {
        "sha256": digest,
        "size": after.st_size,
        "mtime_ns": after.st_mtime_ns,
        "inode": after.st_ino,
        "checked_ns": checked_ns,
    }
    side = sidecar_path(path)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(entry) + "\n")
        tmp.replace(side)
    except OSError as e:
        log.warning("could not write the digest sidecar %s (%s); the file will be hashed again next time", side, e)
        tmp.unlink(missing_ok=True)
    return digest


def content_digest(path: str | Path) -> str:
    """sha256 (hex) of the file's content, from its sidecar when that is still valid, else hashed (and recorded)."""
    path = Path(path)
    st = path.stat()  # FileNotFoundError names the path
    try:
        entry = json.loads(sidecar_path(path).read_text())
        trusted = (
            entry["size"] == st.st_size
            and entry["mtime_ns"] == st.st_mtime_ns
            and entry["inode"] == st.st_ino
            and entry["checked_ns"] - st.st_mtime_ns > RACY_NS
            and len(entry["sha256"]) == 64
        )
    except (OSError, ValueError, KeyError, TypeError):
        trusted = False
    if trusted:
        return entry["sha256"]
    return record_digest(path)


# -- safe loads ---------------------------------------------------------------------------------------------------
def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_json(path: str | Path, remedy: str):
    """The parsed JSON file; a truncated, empty or binary file is a :class:`CorruptFileError` naming it and
    ``remedy`` (what to do, e.g. "delete it and rerun the stage that wrote it")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({_first_line(e)}): {remedy}") from None


def read_yaml_mapping(path: str | Path, what: str, *, missing: str | None = None, remedy: str = "") -> dict:
    """The YAML mapping in ``path`` (an empty file is an empty one), for every reader of a config file.

    A missing file is a FileNotFoundError saying ``missing`` (default: "<what> not found"); YAML that does not parse
    (``remedy`` appended) or is not a mapping is a ValueError naming the file and ``what`` it should hold."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{missing or what + ' not found'}: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid YAML ({e}){'; ' + remedy if remedy else ''}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds no {what} (a YAML mapping), got {type(data).__name__}")
    return data


def read_json_mapping(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or None when there is none to read (missing, unreadable, not JSON, not an object):
    for readers that only look (the retry check, the status view) and must not fail on a file being written."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def torch_load(path: str | Path, remedy: str):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only, nothing executed.

    Raises:
        UnsafeFileError: The pickle holds other objects (it could run code when loaded); nothing of it ran.
        CorruptFileError: The file is empty, truncated or not a torch file; the message names it and ``remedy``.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch reports every refusal as "Weights only load failed"; a reference to a global (a function or class
        # the pickle would call) is the unsafe kind, anything else is a damaged file.
        if "GLOBAL" in str(e):
            raise UnsafeFileError(
                f"refusing to load {path}: it is not a plain checkpoint. It holds pickled objects other than tensors "
                "and plain containers, which torch.load(weights_only=True) refuses because unpickling them can "
                f"execute arbitrary code; nothing of it was run. {remedy} Unpickler said: {_first_line(e)}"
            ) from None
        raise CorruptFileError(f"{path} cannot be read as a torch file ({_first_line(e)}): {remedy}") from None
    except Exception as e:  # what a damaged file raises depends on where it is damaged (EOFError, RuntimeError, ...)
        raise CorruptFileError(
            f"{path} cannot be read as a torch file, it is empty, truncated or of another format "
            f"({type(e).__name__}: {_first_line(e)}): {remedy}"
        ) from None


def load_safetensors(path: str | Path, remedy: str) -> dict:
    """The tensors of a ``.safetensors`` file; an empty, truncated or foreign file is a :class:`CorruptFileError`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (a plain Exception subclass)
        raise CorruptFileError(f"{path} cannot be read as safetensors ({_first_line(e)}): {remedy}") from None


# -- the run lock -------------------------------------------------------------------------------------------------
class RunLock:
    """Exclusive lock on a run directory, held from ``acquire`` (or ``with``) until ``release`` or process exit.

    Locks are per open file (``flock``): a second ``RunLock`` on the same directory fails even in the same process.
    On a file system without ``flock`` support the run goes on with a warning (nothing would detect a second start).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            try:
                h = json.loads(holder)
                who = f"process {h['pid']} on host {h['host']} (started {h['since']})"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise RunLockedError(
                f"{self.directory} is in use by another training of this run: {who} holds {self.path}. Wait for it "
                "to finish or stop it; a crashed run releases the lock by itself."
            ) from None
        except OSError as e:
            os.close(fd)
            log.warning("cannot lock %s (%s): a second training of this run would not be detected", self.path, e)
            return self
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
