"""Job start-up time and peak host memory per rank: the official checkpoint loaded by every rank vs the slim one.

    python benchmarks/bench_startup.py [--repeats 2] [--preset base] [--dir /tmp/x]

A synthetic checkpoint in the official layout (every key and shape of ``mplug_base.pth``: momentum copies, CLIP
text tower, pre-training heads and queues; random values) is written once and converted once into the slim file
(``vlpeft.model.slim.convert``). Then each way of starting a run is measured in fresh processes (one per repeat,
CPU, page cache warm after a first untimed start):

- before: the model built with random initialisation, then ``load_official`` of the whole ``.pth``;
- after: the model built on the meta device and the slim file memory-mapped (``load_mapped``).

Start-up is the wall time from process start (``python`` launched) to a model ready to train, imports included.
Memory is the process's peak RSS (VmHWM) at that point, then after one LoRA training step (batch 2), with the
split of the resident memory into private (anonymous) and file-backed pages: file-backed pages of a memory map
are shared by every rank on a node through the page cache. The model is the base size by default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) / 1024  # MiB
    return out


def worker(kind: str, path: str, preset_name: str, t_launch: float) -> dict:
    import torch

    from vlpeft.methods.base import build_method, trainable_parameters
    from vlpeft.model.config import preset

    cfg = preset(preset_name)
    if kind == "before":
        from vlpeft.model.checkpoint import load_official
        from vlpeft.model.mplug import MPlug

        model = MPlug(cfg)
        load_official(model, path)
    else:
        from vlpeft.model.slim import load_mapped

        model = load_mapped(cfg, path)
    ready = time.time() - t_launch
    at_ready = _status()
    build_method("lora", size=8).attach(model)
    model.train()
    opt = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000 % cfg.vocab_size, cfg.vocab_size, (2, 12), generator=g)
    model(
        torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=g),
        ids[:, :6],
        torch.ones(2, 6, dtype=torch.long),
        ids,
        torch.ones_like(ids),
    ).backward()
    opt.step()
    return {"startup_s": ready, "ready": at_ready, "step": _status()}


def run(kind: str, path: Path, preset_name: str) -> dict:
    t0 = time.time()
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--path",
        str(path),
        "--preset",
        preset_name,
        "--launched",
        repr(t0),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--preset", default="base")
    p.add_argument("--dir", type=Path, help="where the two checkpoints go (default: a temporary directory)")
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.path, a.preset, a.launched)))
        return 0

    import torch

    from vlpeft.testing import make_synthetic_official_checkpoint
    from vlpeft.model.config import preset
    from vlpeft.model.slim import convert

    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        official, slim = Path(d) / "mplug_base.pth", Path(d) / "mplug_base.slim.safetensors"
        cfg = preset(a.preset)
        torch.save({"model": make_synthetic_official_checkpoint(cfg)}, official)
        t0 = time.time()
        convert(official, slim, cfg)
        t_convert = time.time() - t0
        results: dict[str, list[dict]] = {"before": [], "after": []}
        for kind, path in (("before", official), ("after", slim)):
            run(kind, path, a.preset)  # untimed: warms the page cache
            results[kind] = [run(kind, path, a.preset) for _ in range(a.repeats)]
        sizes = {"official": official.stat().st_size, "slim": slim.stat().st_size}

    print(
        f"{a.preset} model, CPU; checkpoint files: official layout {sizes['official'] / 2**30:.2f} GiB, "
        f"slim {sizes['slim'] / 2**30:.2f} GiB (converted once in {t_convert:.1f} s)"
    )
    print(
        f"{'':<8} {'start-up s':>10} {'peak RSS at start MiB':>22} {'peak RSS after a step MiB':>26} "
        f"{'private / file-backed after a step MiB':>40}"
    )
    summary = {}
    for kind, rows in results.items():
        s = {
            "startup_s": statistics.median(r["startup_s"] for r in rows),
            "peak_ready_mib": statistics.median(r["ready"]["VmHWM"] for r in rows),
            "peak_step_mib": statistics.median(r["step"]["VmHWM"] for r in rows),
            "anon_mib": statistics.median(r["step"]["RssAnon"] for r in rows),
            "file_mib": statistics.median(r["step"]["RssFile"] for r in rows),
        }
        summary[kind] = s
        print(
            f"{kind:<8} {s['startup_s']:>10.1f} {s['peak_ready_mib']:>22.0f} {s['peak_step_mib']:>26.0f} "
            f"{s['anon_mib']:>19.0f} / {s['file_mib']:<18.0f}"
        )
    b, f = summary["before"], summary["after"]
    print(
        f"after / before: start-up {f['startup_s'] / b['startup_s']:.2f}x, peak RSS at start "
        f"{f['peak_ready_mib'] / b['peak_ready_mib']:.2f}x, after a step {f['peak_step_mib'] / b['peak_step_mib']:.2f}x,"
        f" private memory after a step {f['anon_mib'] / b['anon_mib']:.2f}x"
    )
    print(f"repeats: {a.repeats} (medians); load average at the end: {os.getloadavg()[0]:.1f}")
    if a.json:
        a.json.write_text(
            json.dumps({"sizes": sizes, "convert_s": t_convert, "runs": results, "summary": summary}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
