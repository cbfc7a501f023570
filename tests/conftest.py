"""Shared fixtures: one torch thread, a tiny synthetic study on disk, run configs over it, and a local HTTP server
that answers ``Range`` requests."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread(request):
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning threads make
    them 5-10x slower; tests of the base-size model (marked slow) keep the default."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """Synthetic raw data, prepared records, subsets, vocabulary and a 64 px image cache."""
    from vlpeft.data import stages, synthetic
    from vlpeft.tokenizer import train_vocab

    root = tmp_path_factory.mktemp("study")
    raw = root / "raw"
    synthetic.generate(raw, 24, 4, 4, seed=0)
    stages.prepare_captions(
        raw / "dataset_coco.json", {s: root / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")}
    )
    folders = ("train2014", "val2014")
    stages.prepare_vqa(
        raw / "dataset_coco.json",
        [raw / f"v2_OpenEnded_mscoco_{f}_questions.json" for f in folders],
        [raw / f"v2_mscoco_{f}_annotations.json" for f in folders],
        {s: root / f"prep/vqa/{s}.jsonl" for s in ("train", "val", "test")},
    )
    for task in ("coco", "vqa"):
        stages.make_subset(task, root / f"prep/{task}/train.jsonl", 0.5, 0, root / f"subsets/{task}/ratio0.5.json")
    stages.cache_images(
        raw / "images", [root / f"prep/coco/{s}.jsonl" for s in ("train", "val", "test")], 64, root / "images_64.npy"
    )
    train_vocab(synthetic.corpus(raw), root / "vocab.txt")
    return root


def make_run_config(study: Path, out_dir: Path, task: str = "coco", method: str = "lora", **overrides) -> dict:
    """A tiny run's resolved config as a dict (see vlpeft.runconfig.RunConfig)."""
    d = {
        "run_id": f"test/{task}/{method}",
        "task": task,
        "method": method,
        "method_options": {} if method == "full" else {"size": 2},
        "data_ratio": 0.5,
        "seed": 0,
        "records": {s: str(study / f"prep/{task}/{s}.jsonl") for s in ("train", "val", "test")},
        "subset": str(study / f"subsets/{task}/ratio0.5.json"),
        "image_root": str(study / "raw/images"),
        "image_cache": str(study / "images_64.npy"),
        "vocab": str(study / "vocab.txt"),
        "model_preset": "tiny",
        "model_overrides": {},
        "init_weights": None,
        "init_format": "none",
        "lr": 1e-3,
        "out_dir": str(out_dir),
        "total_batch_size": 8,
        "per_device_batch_size": 4,
        "schedule": {"kind": "steps", "steps": 6, "warmup_steps": 2},
        "eval": {
            "interval": 3,
            "splits": ["val", "test"],
            "num_beams": 2,
            "min_new_tokens": 1,
            "max_new_tokens": 4,
            "batch_size": 8,
            "metrics": ["CIDEr"] if task == "coco" else [],
        },
        "log_every": 1,
        "threads": 1,
        "device": "cpu",  # CPU tests stay on the CPU (and bit-exact) on a machine with a GPU too
    }
    d.update(overrides)
    return d


def signal_after(trainer, step: int, signal_name: str = "SIGTERM") -> None:
    """Make ``trainer`` behave as if ``signal_name`` arrived right after optimizer step ``step``."""
    train_step = trainer.train_step

    def wrapped():
        loss = train_step()
        if trainer.step == step:
            trainer.stop_signal = signal_name
        return loss

    trainer.train_step = wrapped


# -- a local HTTP server with Range requests (the download tests) -----------------------------------------------------
_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class RangeServer:
    """Serves ``files`` (URL path -> content) on 127.0.0.1; ``Range: bytes=N-`` is answered with 206 (or 416 past the
    end) unless ``ignore_range``. Each request consumes one entry of ``faults``: "500" (an error), "drop" (half the
    body, then the connection closes), "stall" (half the body, a 1 s pause, then the close). ``requests`` logs the
    path and Range header of every request."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: list[str | None] = field(default_factory=list)
    ignore_range: bool = False
    requests: list[dict[str, str | None]] = field(default_factory=list)
    base: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path


def _range_handler(state: RangeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output quiet

        def do_GET(self) -> None:
            self._respond(body=True)

        def do_HEAD(self) -> None:
            self._respond(body=False)

        def _respond(self, body: bool) -> None:
            path, requested = self.path.split("?", 1)[0], self.headers.get("Range")
            with state.lock:
                state.requests.append({"path": path, "range": requested})
                fault = state.faults.pop(0) if state.faults else None
            data = state.files.get(path)
            if fault == "500":
                self.send_error(500)
                return
            if data is None:
                self.send_error(404)
                return
            start = 0
            m = _RANGE.match(requested or "")
            if m and not state.ignore_range:
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            # The full length is announced even for faults, so the client must notice the short body itself.
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not body:
                return
            try:
                if fault in ("drop", "stall"):
                    self.wfile.write(data[start:][: (len(data) - start) // 2])
                    self.wfile.flush()
                    if fault == "stall":
                        time.sleep(1.0)
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a stalled response, as intended

    return Handler


@contextlib.contextmanager
def serve(files: dict[str, bytes]) -> Iterator[RangeServer]:
    """A :class:`RangeServer` of ``files`` on a free port, in a thread, for the duration of the block."""
    state = RangeServer(files=files)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _range_handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def http_server() -> Iterator[RangeServer]:
    """A :class:`RangeServer` serving nothing yet: the test puts its ``files`` (and ``faults``) in."""
    with serve({}) as server:
        yield server
