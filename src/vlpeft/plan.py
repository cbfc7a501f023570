"""``vlpeft plan --config X --profile P [-j N] [--json]``: what a study will take, before launching it (writes nothing).

Every number says where it comes from:

- runs, training and evaluation samples and predicted GPU-hours: the cost model (``vlpeft.cost``: counted FLOPs
  over the training FLOP rate per GPU measured for each method by the benchmark recording the profile names, else by
  the pilot's run records (``results/pilot/runs/``: counted FLOPs of the samples trained over the training loop's
  seconds), else the profile's MFU assumption), with the split sizes of the prepared records, else the config's
  ``expected_counts``, else the paper's (no data needed);
- wall time at ``-j N``: every training job's predicted duration (its GPU-hours on the profile's GPUs per job, linear
  scaling assumed, as the SLURM limits assume) placed by a greedy longest-first list schedule on ``N`` concurrent
  jobs (each job, longest first, starts on the slot that frees first); also the same schedule of the first
  attempts' SLURM limits (margin and overhead included: the worst case before retries). Only the training runs are
  scheduled: downloads, unpacking, the caches, the slim checkpoint, the baselines and the figures are not;
- peak GPUs requested: ``min(N, runs)`` x the profile's GPUs per training job (``set-resources.train_run.gpu``);
- disk per stage: downloads (sizes recorded in the config or in ``results/downloads/checksums.txt``, else measured
  on disk, else unknown), unpacked files (measured when present; the COCO images estimated as the size of their
  zips, whose JPEGs do not compress further), the image cache (images x S x S x 3 bytes), the feature store
  (images x tokens x width x bytes of its dtype), the slim checkpoint (parameters x 4 bytes), the runs' resume
  checkpoints (trainable parameters x 12 bytes: fp32 weights and AdamW's two moments; each running job holds one
  from its first evaluation and deletes it when it ends, so the peak is taken over the list schedule) and the saved
  weights (trainable parameters after ``merge`` x 4 bytes per run). Small files (run configs, logs, records,
  predictions) are left out;
- the largest job's memory: host memory as the profile requests it (``mem_mb``); GPU memory per rank as a static
  estimate (fp32 weights of the whole model, plus 16 bytes per trainable parameter: gradient, DDP's gradient bucket,
  AdamW's two moments; activations not estimated) and, where recorded, the peaks measured by this study's or the
  pilot's run records and by the benchmark recording.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cost

DEFAULT_JOBS = 40  # the README's `snakemake --profile profiles/slurm -j 40`
CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 trainable weights + AdamW's exp_avg and exp_avg_sq
WEIGHTS_BYTES_PER_PARAM = 4  # trained.safetensors: the trainable parameters in fp32
STATIC_GPU_BYTES_PER_TRAINABLE = 16  # fp32 gradient, DDP's gradient bucket, AdamW's two moments
STORE_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}
PILOT_STUDY = "pilot"
# rule unpack_vqa's outputs under data/raw/ (rules/common.smk: vqa_raw_files)
VQA_RAW = [
    name
    for split in ("train2014", "val2014")
    for name in (f"v2_OpenEnded_mscoco_{split}_questions.json", f"v2_mscoco_{split}_annotations.json")
]


@dataclass
class DiskItem:
    """One thing a stage writes: its size in bytes (None: unknown) and where the number comes from."""

    stage: str
    name: str
    bytes: int | None
    source: str


# -- schedule ----------------------------------------------------------------------------------------------------


def list_schedule(durations: list[float], slots: int) -> tuple[float, list[tuple[float, float]]]:
    """Greedy longest-first list schedule of ``durations`` on ``slots`` concurrent jobs.

    Returns:
        The makespan and each job's ``(start, end)``, in the order of ``durations``.
    """
    if slots < 1:
        raise ValueError(f"-j/--jobs must be at least 1, got {slots}")
    free = [(0.0, i) for i in range(min(slots, len(durations)))]  # (time the slot frees, slot)
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(durations)
    for i in sorted(range(len(durations)), key=lambda j: -durations[j]):
        start, slot = heapq.heappop(free)
        spans[i] = (start, start + durations[i])
        heapq.heappush(free, (start + durations[i], slot))
    return max((e for _, e in spans), default=0.0), spans


def peak_concurrent(spans: list[tuple[float, float]], sizes: list[int]) -> int:
    """The largest sum of ``sizes`` over jobs running at the same time (a job ending frees before one starting)."""
    events = sorted([(s, 1, n) for (s, _), n in zip(spans, sizes)] + [(e, 0, -n) for (_, e), n in zip(spans, sizes)])
    peak = now = 0
    for _, _, n in events:
        now += n
        peak = max(peak, now)
    return peak


# -- profile -----------------------------------------------------------------------------------------------------


def profile_resources(profile: Path) -> dict:
    """``default-resources`` and ``set-resources`` of a Snakemake profile's config.yaml."""
    from .files import read_yaml_mapping

    path = profile / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile not found: {path} (give --profile the folder of a Snakemake profile)")
    prof = read_yaml_mapping(path, "Snakemake profile")
    return {"default": dict(prof.get("default-resources") or {}), "rules": dict(prof.get("set-resources") or {})}


def _mem_mb(resources: dict, rule: str) -> tuple[int | None, str]:
    value = (resources["rules"].get(rule) or {}).get("mem_mb")
    if value is not None:
        return int(value), f"set-resources.{rule}.mem_mb"
    value = resources["default"].get("mem_mb")
    if value is not None:
        return int(value), "default-resources.mem_mb"
    return None, "not set in the profile"


# -- disk --------------------------------------------------------------------------------------------------------


def _measured(path: Path) -> int | None:
    """Bytes of a file, or of the files under a folder; None when absent."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def _download_items(config: dict, root: Path) -> list[DiskItem]:
    from .data.download import read_checksum_record
    from .grid import DOWNLOADS

    record_path = root / DOWNLOADS / "checksums.txt"
    recorded = read_checksum_record(record_path) if record_path.is_file() else {}
    items = []
    for name, spec in (config["data"].get("downloads") or {}).items():
        if spec.get("size"):
            items.append(DiskItem("downloads", name, int(spec["size"]), "config (data.downloads)"))
        elif name in recorded:
            items.append(DiskItem("downloads", name, recorded[name][1], f"recorded in {DOWNLOADS}/checksums.txt"))
        elif (n := _measured(root / DOWNLOADS / name)) is not None:
            items.append(DiskItem("downloads", name, n, "measured on disk"))
        else:
            items.append(DiskItem("downloads", name, None, "unknown: no size in the config, not downloaded yet"))
    return items


def _unpacked_items(config: dict, root: Path, downloads: list[DiskItem]) -> list[DiskItem]:
    from .grid import image_root, official_checkpoint_path, study_root, vocab_path

    study = study_root(config)
    items = []
    images = root / image_root(study)
    if (images / ".complete").is_file():
        items.append(DiskItem("unpacked", "COCO images", _measured(images), "measured on disk"))
    elif config["data"]["source"] == "download":
        zips = [d.bytes for d in downloads if d.name in ("train2014.zip", "val2014.zip")]
        if len(zips) == 2 and None not in zips:
            items.append(
                DiskItem(
                    "unpacked",
                    "COCO images",
                    sum(zips),
                    "estimate: the size of the image zips (JPEGs do not compress further)",
                )
            )
        else:
            items.append(DiskItem("unpacked", "COCO images", None, "unknown: no zip sizes, not unpacked yet"))
    else:
        items.append(DiskItem("unpacked", "synthetic images", None, "unknown until generated"))
    if config["data"]["source"] == "download":
        by_name = {d.name: d for d in downloads}
        raw = {
            "Karpathy dataset_coco.json": [f"{study}/data/raw/dataset_coco.json"],
            "VQAv2 questions and annotations": [f"{study}/data/raw/{name}" for name in VQA_RAW],
        }
        for name, rels in raw.items():
            sizes = [_measured(root / rel) for rel in rels]
            n = None if None in sizes else sum(sizes)
            items.append(
                DiskItem("unpacked", name, n, "measured on disk" if n is not None else "unknown until unpacked")
            )
        if config["model"]["init"] == "official":
            official = by_name.get("mplug_base.pth")
            n = _measured(root / official_checkpoint_path(config))
            if n is not None:
                items.append(DiskItem("unpacked", "mplug_base.pth (study copy)", n, "measured on disk"))
            else:
                items.append(
                    DiskItem(
                        "unpacked",
                        "mplug_base.pth (study copy)",
                        official.bytes if official else None,
                        "the download's size" if official and official.bytes else "unknown",
                    )
                )
        n = _measured(root / vocab_path(study))
        items.append(DiskItem("unpacked", "vocab.txt", n, "measured on disk" if n is not None else "unknown"))
    return items


def _cache_items(config: dict, mc, n_images: int, images_source: str) -> list[DiskItem]:
    from .grid import features_path, image_cache_path

    items = []
    if image_cache_path(config):
        s = mc.image_size
        items.append(
            DiskItem(
                "caches",
                f"image cache ({s} px, uint8)",
                n_images * s * s * 3,
                f"{n_images:,} images ({images_source}) x {s} x {s} x 3 bytes",
            )
        )
    if features_path(config):
        dtype = (config["data"].get("feature_store") or {}).get("dtype", "float16")
        per = mc.num_image_tokens * mc.vision_width * STORE_ITEMSIZE[dtype]
        items.append(
            DiskItem(
                "caches",
                f"feature store ({dtype})",
                n_images * per,
                f"{n_images:,} images x {mc.num_image_tokens} tokens x {mc.vision_width} x "
                f"{STORE_ITEMSIZE[dtype]} bytes",
            )
        )
    return items


# -- the plan ----------------------------------------------------------------------------------------------------


def _parameters(config: dict, mc) -> dict[str, tuple[int, int]]:
    """Per run: trainable parameters while it trains (what its resume checkpoint and optimizer hold) and those its
    saved weights hold (after ``merge``: prefix-tuning folds its reparametrising MLP away), from the closed-form
    counts of its method, size and classifier flag."""
    from .grid import expand, resolve
    from .methods.base import build_method

    out = {}
    for run in expand(config):
        method = build_method(run.method, **resolve(config, run)["method_options"])
        trained = method.closed_form_count(mc)
        merged = method.merged_count(mc)  # None: merging removes nothing trainable
        out[run.run_id] = (trained, trained if merged is None else merged)
    return out


def _measured_gpu_memory(config: dict, root: Path, settings: cost.CostSettings) -> list[dict]:
    """Peak GPU memory recorded by this study's and the pilot's run records, and by the benchmark recording."""
    from .files import read_json_mapping
    from .grid import study_root

    found = []
    for study in dict.fromkeys([config["study"], PILOT_STUDY]):
        runs = root / study_root({"study": study}) / "runs"
        best = None
        for path in sorted(runs.glob("*/*/*/seed*/record.json")) if runs.is_dir() else []:
            rec = read_json_mapping(path) or {}
            peak = rec.get("peak_gpu_memory_bytes")
            if peak and (best is None or peak > best["bytes"]):
                best = {"bytes": int(peak), "source": f"{path.relative_to(root)} (peak_gpu_memory_bytes)"}
        if best:
            found.append(best)
    if settings.benchmark and Path(settings.benchmark).is_file():
        rows = json.loads(Path(settings.benchmark).read_text())
        peaks = [r for r in rows if r.get("peak_gib")]
        if peaks:
            top = max(peaks, key=lambda r: r["peak_gib"])
            found.append(
                {
                    "bytes": int(top["peak_gib"] * 2**30),
                    "source": f"{settings.benchmark} ({top['method']}, at the benchmark's batch)",
                }
            )
    return found


def pilot_rates(config: dict, root: Path, mc) -> tuple[dict[tuple[str, bool], float], str]:
    """Training FLOP/s per GPU by (method, store) measured by the pilot's successful run records of the same model:
    the run's counted FLOPs per training sample x samples trained / (training-loop seconds x processes), averaged
    over the records of a method. Its few steps include the first, slow ones: a conservative rate."""
    import statistics

    from .files import read_json_mapping
    from .grid import study_root
    from .tasks import TASKS

    runs = root / study_root({"study": PILOT_STUDY}) / "runs"
    model = (config["model"]["preset"], dict(config["model"].get("overrides") or {}))
    found: dict[tuple[str, bool], list[float]] = {}
    for path in sorted(runs.glob("*/*/*/seed*/record.json")) if runs.is_dir() else []:
        rec = read_json_mapping(path) or {}
        cfg = rec.get("config") or {}
        if (
            rec.get("status") != "success"
            or (cfg.get("model_preset"), cfg.get("model_overrides") or {}) != model
            or not rec.get("samples_seen")
            or not rec.get("train_time_s")
            or cfg.get("task") not in TASKS
        ):
            continue
        store = cfg.get("feature_store") is not None
        tok = TASKS[cfg["task"]]
        per_sample = cost.train_flops(
            mc,
            cfg["method"],
            json.dumps(cfg.get("method_options") or {}, sort_keys=True),
            tok.prompt_tokens,
            tok.target_tokens,
            features=store,
        )
        rate = per_sample * rec["samples_seen"] / (rec["train_time_s"] * int(rec.get("world_size") or 1))
        found.setdefault((cfg["method"], store), []).append(rate)
    n = sum(len(v) for v in found.values())
    return (
        {k: statistics.fmean(v) for k, v in found.items()},
        f"{n} pilot run record(s) under {runs.relative_to(root)}" if n else "",
    )


def make_plan(
    config: dict, profile: str | os.PathLike, jobs: int = DEFAULT_JOBS, root: str | os.PathLike = "."
) -> dict:
    """The plan of a study as plain data (see the module docstring; :func:`format_plan` prints it)."""
    from .methods.full import model_count

    if jobs < 1:
        raise ValueError(f"-j/--jobs must be at least 1, got {jobs}")
    profile, root = Path(profile), Path(root)
    resources = profile_resources(profile)
    settings = cost.load_settings(profile)
    gpus = int((resources["rules"].get("train_run") or {}).get("gpu") or 0)
    mc = cost.model_config(config, root)
    costs = cost.run_costs(config, root)
    preds, source = cost.predict(costs, settings, pilot_rates(config, root, mc))
    counts = _parameters(config, mc)
    trainable = {r: trained for r, (trained, _) in counts.items()}
    sizes = {t: cost.split_sizes(config, t, root)[1] for t in config["tasks"]}

    runs = len(costs)
    gpu_hours = sum(p.gpu_hours for p in preds)
    wall = limit_wall = None
    spans: list[tuple[float, float]] = []
    if gpus and runs:
        durations = [p.gpu_hours / gpus for p in preds]  # hours on the job's GPUs, linear scaling
        wall, spans = list_schedule(durations, jobs)
        limit_wall = list_schedule([p.slurm_minutes / 60.0 for p in preds], jobs)[0]

    downloads = _download_items(config, root) if config["data"]["source"] == "download" else []
    n_images, images_source = cost.study_images(config, root)
    params = model_count(mc)
    disk = [*downloads, *_unpacked_items(config, root, downloads), *_cache_items(config, mc, n_images, images_source)]
    weights_name = "slim checkpoint" if config["model"]["init"] == "official" else "pre-trained model"
    disk.append(DiskItem("model", weights_name, params * 4, f"{params:,} parameters x 4 bytes (fp32)"))
    ckpt = [trainable[c.run_id] * CHECKPOINT_BYTES_PER_PARAM for c in costs]
    if spans:
        disk.append(
            DiskItem(
                "checkpoints",
                "resume checkpoints (peak, deleted when a run ends)",
                peak_concurrent(spans, ckpt),
                f"trainable x {CHECKPOINT_BYTES_PER_PARAM} bytes, summed over the jobs running at "
                f"once in the list schedule at -j {jobs}",
            )
        )
    else:
        top = sorted(ckpt, reverse=True)[:jobs]
        disk.append(
            DiskItem(
                "checkpoints",
                "resume checkpoints (peak, deleted when a run ends)",
                sum(top),
                f"trainable x {CHECKPOINT_BYTES_PER_PARAM} bytes of the {len(top)} largest runs "
                f"(no schedule without GPUs)",
            )
        )
    saved = sum(n for _, n in counts.values())
    disk.append(
        DiskItem(
            "saved weights",
            f"trained.safetensors of {runs} runs",
            saved * WEIGHTS_BYTES_PER_PARAM,
            f"{saved:,} trained parameters after merge x {WEIGHTS_BYTES_PER_PARAM} bytes (fp32)",
        )
    )

    host, host_src = _mem_mb(resources, "train_run")
    rules_mem = {r: _mem_mb(resources, r)[0] for r in resources["rules"]}
    rules_mem = {r: m for r, m in rules_mem.items() if m is not None}
    largest_rule = max(rules_mem, key=rules_mem.get) if rules_mem else None
    biggest = max(costs, key=lambda c: trainable[c.run_id]) if costs else None
    static = (params * 4 + STATIC_GPU_BYTES_PER_TRAINABLE * trainable[biggest.run_id]) if biggest else 0
    return {
        "study": config["study"],
        "profile": str(profile),
        "jobs": jobs,
        "runs": runs,
        "sizes": sizes,
        "source": source,
        "train_samples": sum(c.train_samples for c in costs),
        "eval_samples": sum(c.eval_samples for c in costs),
        "gpu_hours": gpu_hours,
        "eval_gpu_hours": sum(p.eval_hours_store if c.store else p.eval_hours_no_store for c, p in zip(costs, preds)),
        "gpus_per_job": gpus,
        "wall_hours": wall,
        "wall_hours_lower_bound": (
            max(gpu_hours / gpus / jobs, max(p.gpu_hours for p in preds) / gpus) if wall is not None else None
        ),
        "wall_hours_at_limits": limit_wall,
        "peak_gpus": min(jobs, runs) * gpus,
        "disk": [asdict(d) for d in disk],
        "memory": {
            "host_mb_training_job": host,
            "host_source": host_src,
            "host_mb_largest_job": rules_mem.get(largest_rule) if largest_rule else host,
            "host_largest_rule": largest_rule,
            "gpu_static_bytes": static,
            "gpu_static_run": biggest.run_id if biggest else None,
            "gpu_static_trainable": trainable[biggest.run_id] if biggest else None,
            "gpu_measured": _measured_gpu_memory(config, root, settings),
        },
    }


# -- output ------------------------------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    """Bytes in decimal units (as disks are sold and ``df -H`` shows them)."""
    if n is None:
        return "unknown"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e3:,.1f} kB"


def _hours(h: float | None) -> str:
    if h is None:
        return "n/a"
    return f"{h:,.1f} h ({h / 24:.1f} days)" if h >= 24 else f"{h:,.2f} h"


def format_plan(doc: dict) -> str:
    """The plan as a readable table."""
    g = doc["gpus_per_job"]
    out = [
        f"plan of study {doc['study']} with profile {doc['profile']} at -j {doc['jobs']}",
        f"  runs                 {doc['runs']:,} training jobs ({doc['train_samples']:,} training and "
        f"{doc['eval_samples']:,} evaluation samples; split sizes: "
        + ", ".join(f"{t} {s}" for t, s in doc["sizes"].items())
        + ")",
        f"  GPU-hours            {doc['gpu_hours']:,.0f} predicted (evaluation {doc['eval_gpu_hours']:,.0f}); "
        f"{doc['source']}",
    ]
    if g:
        out += [
            f"  wall time at -j {doc['jobs']:<4} {_hours(doc['wall_hours'])}: greedy longest-first list schedule "
            f"of the predicted durations (GPU-hours / {g} GPUs per job) on {doc['jobs']} concurrent jobs; lower "
            f"bound {_hours(doc['wall_hours_lower_bound'])}",
            f"  at the SLURM limits  {_hours(doc['wall_hours_at_limits'])}: the same schedule of the first "
            "attempts' time limits (margin and overhead included)",
        ]
    else:
        out.append(
            "  wall time            n/a: the profile gives training jobs no GPU (set-resources.train_run.gpu); "
            "the GPU-hour model does not apply to CPU runs"
        )
    out.append(
        f"  peak GPUs requested  {doc['peak_gpus']:,} = min({doc['jobs']}, {doc['runs']} runs) x {g} GPUs "
        "per training job (set-resources.train_run.gpu)"
    )
    out.append("disk")
    width = max(len(d["name"]) for d in doc["disk"])
    stages = list(dict.fromkeys(d["stage"] for d in doc["disk"]))
    for stage in stages:
        items = [d for d in doc["disk"] if d["stage"] == stage]
        known = sum(d["bytes"] for d in items if d["bytes"] is not None)
        unknown = sum(d["bytes"] is None for d in items)
        out.append(f"  {stage:<14} {_size(known):>12}" + (f" + {unknown} unknown" if unknown else ""))
        for d in items:
            out.append(f"    {d['name']:<{width}} {_size(d['bytes']):>12}  {d['source']}")
    total = sum(d["bytes"] for d in doc["disk"] if d["bytes"] is not None)
    unknown = sum(d["bytes"] is None for d in doc["disk"])
    out.append(
        f"  {'total (peak)':<14} {_size(total):>12}" + (f" + {unknown} item(s) of unknown size" if unknown else "")
    )
    m = doc["memory"]
    host = "not set" if m["host_mb_training_job"] is None else f"{m['host_mb_training_job']:,} MB"
    out.append("largest job's memory")
    out.append(f"  host, training job   {host} ({m['host_source']})")
    if m["host_largest_rule"] and m["host_largest_rule"] != "train_run":
        out.append(f"  host, any job        {m['host_mb_largest_job']:,} MB ({m['host_largest_rule']})")
    if m["gpu_static_run"]:
        out.append(
            f"  GPU per rank         {_size(m['gpu_static_bytes'])} static estimate for "
            f"{m['gpu_static_run']} ({m['gpu_static_trainable']:,} trainable): fp32 weights + "
            f"{STATIC_GPU_BYTES_PER_TRAINABLE} bytes per trainable parameter; activations not estimated"
        )
    for r in m["gpu_measured"]:
        out.append(f"  GPU measured         {_size(r['bytes'])} peak, {r['source']}")
    if not m["gpu_measured"]:
        out.append(
            "  GPU measured         none recorded yet (the pilot's run records and a benchmark recording give "
            "the peak with activations)"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from .console import announce

    p = argparse.ArgumentParser(prog="vlpeft plan", description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("--config", default="config/config.yaml", help="study config (default: %(default)s, the paper's)")
    p.add_argument(
        "--profile",
        default="profiles/slurm",
        help="Snakemake profile folder: its config.yaml (resources) and cost.yaml (default: %(default)s)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        help="concurrent jobs, as snakemake's -j (default: %(default)s)",
    )
    p.add_argument("--root", default=".", help="working directory of the study (for data and records present)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of the table")
    a = p.parse_args(argv)
    if not Path(a.config).is_file():
        raise FileNotFoundError(f"config file not found: {a.config}")
    if a.jobs < 1:
        raise ValueError(f"-j/--jobs must be at least 1, got {a.jobs}")
    if not (Path(a.profile) / "config.yaml").is_file():
        raise FileNotFoundError(
            f"profile not found: {Path(a.profile) / 'config.yaml'} (give --profile the folder of a Snakemake profile)"
        )
    announce("vlpeft plan", f"counting the FLOPs of every run of {a.config} (loads torch; minutes for the paper grid)")
    from .grid import load_config

    doc = make_plan(load_config(a.config), a.profile, a.jobs, a.root)
    print(json.dumps(doc, indent=1) if a.json else format_plan(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
