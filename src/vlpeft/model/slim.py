"""One slim checkpoint for every run: the official ``mplug_base.pth`` converted once, then memory-mapped.

The official file holds the pre-training model (momentum copies, the CLIP text tower, pre-training heads and
queues: 1,405 of its 2,136 tensors are not used by fine-tuning). Loading it in every rank of every run means a
full read of the file from the shared filesystem and the whole file in each rank's memory. Instead:

- :func:`convert` reads it once with the checking loader of :mod:`vlpeft.model.checkpoint` and writes a
  safetensors file of exactly the model's tensors (the tied decoder projection once, as the word embeddings),
  plus the loader's full report beside it (every ignored key with its reason);
- :func:`load_mapped` builds the model on the meta device (no allocation, no random initialisation) and
  assigns tensors that are views of a private, copy-on-write memory map of the file: a rank reads only the
  pages it touches, the node's page cache is shared by all ranks and runs, and a trained parameter gets its own
  pages when the optimizer first writes it.

The same file format (our state dict less the tied projection) is what the mini study's pre-training writes, so
both kinds of initial weights load the same way. The metadata carries ``visual_digest``, a digest of the ViT's
tensors, which the visual-feature store (:mod:`vlpeft.data.features`) is tagged with.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from pathlib import Path

import torch

from .config import MPlugConfig

FORMAT = "vlpeft-weights/1"
TIED = "text_decoder.cls.predictions.decoder.weight"  # tied to the decoder's word embeddings: stored once
VISUAL = "visual_encoder."

# safetensors dtype names (https://github.com/huggingface/safetensors, format section) -> torch dtypes
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def tensor_digest(state: dict[str, torch.Tensor], prefix: str = VISUAL) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the tensors whose names start with ``prefix``."""
    h = hashlib.sha256()
    for name in sorted(k for k in state if k.startswith(prefix)):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_metadata(state: dict[str, torch.Tensor], cfg: MPlugConfig, **extra: str) -> dict[str, str]:
    """safetensors metadata of a weights file: format, model size, ViT digest, and ``extra`` strings."""
    return {
        "format": FORMAT,
        "model_config": json.dumps(cfg.to_dict(), sort_keys=True),
        "visual_digest": tensor_digest(state),
        **extra,
    }


_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """``tensors`` as a safetensors file, the same bytes for the same tensors and metadata; atomic (a temporary file
    renamed into place).

    safetensors' own writer orders the metadata through a Rust hash map, randomly seeded in every process, so the
    same weights gave files with other bytes (and digests) from run to run. Here the header lists the metadata and
    the tensors in a fixed order: tensors by item size (largest first, so that each starts aligned for its dtype,
    as safetensors lays them out) then name, the header padded with spaces to 8 bytes."""
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict[str, object] = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    blobs, offset = [], 0
    for name in order:
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _NAMES:
            raise ValueError(f"tensor {name}: dtype {t.dtype} cannot be written as safetensors here")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    tmp.replace(path)


def save_weights(model: torch.nn.Module, path: str | os.PathLike, **extra: str) -> None:
    """The model's state dict (tied projection once) as safetensors with :func:`weights_metadata`; atomic."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != TIED}
    write_safetensors(state, path, weights_metadata(state, model.config, **extra))


def _header(path: str | os.PathLike) -> tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header length {n})")
        return 8 + n, json.loads(f.read(n))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (header only)."""
    return dict(_header(path)[1].get("__metadata__") or {})


def map_safetensors(
    path: str | os.PathLike, remedy: str = "Delete it and rerun the stage that wrote it."
) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a view of one private (copy-on-write) memory map of it.

    Nothing is read until a tensor's pages are touched; writes go to the process's own copy of those pages, never
    to the file.

    Raises:
        CorruptFileError: An empty, truncated or foreign file (the message names it and ends with ``remedy``).
    """
    from ..files import CorruptFileError

    try:
        start, header = _header(path)
        size = os.path.getsize(path)
        if not isinstance(header, dict) or any(
            not isinstance(v, dict) or start + v["data_offsets"][1] > size
            for k, v in header.items()
            if k != "__metadata__"
        ):
            raise ValueError("its tensors lie beyond the end of the file")
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as e:
        raise CorruptFileError(
            f"{path} cannot be read as safetensors ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
            f"{remedy}"
        ) from None
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = info["shape"]
        if begin == end:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(buf, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=start + begin)
        out[name] = flat.view(shape)
    return out


def load_mapped(
    cfg: MPlugConfig, path: str | os.PathLike, remedy: str = "Delete it and rerun the stage that wrote it."
):
    """An :class:`~vlpeft.model.mplug.MPlug` of size ``cfg`` whose tensors map ``path`` (see module docstring).

    Raises:
        FileNotFoundError: No such file.
        CorruptFileError: The file cannot be read as safetensors (the message ends with ``remedy``).
        ValueError: The file's tensors do not fit the model (names or shapes), named in the message.
    """
    from .mplug import meta_model

    if not Path(path).is_file():
        raise FileNotFoundError(f"initial weights not found: {path}")
    model = meta_model(cfg)
    state = map_safetensors(path, remedy)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != TIED}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    wrong = [(k, list(state[k].shape), list(s)) for k, s in expected.items() if tuple(state[k].shape) != s]
    if wrong:
        raise ValueError(f"{path} does not fit the model: shapes (name, file, model) {wrong[:5]}")
    model.load_state_dict(state, strict=False, assign=True)
    model.text_decoder.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # pragma: no cover - a tensor the checks above let through
        raise ValueError(f"{path}: tensors left unloaded: {left[:5]}")
    return model


def convert(
    source: str | os.PathLike, out: str | os.PathLike, cfg: MPlugConfig, report_path: str | os.PathLike | None = None
) -> str:
    """Convert an official checkpoint into the slim file ``out`` and write the load report beside it.

    The report (``report_path``, default ``<out>.report.txt``) has the loader's summary and then every ignored
    checkpoint key with its reason. The source's sha256 goes into the metadata.

    Returns:
        The report's summary.

    Raises:
        CheckpointError: The checkpoint lacks a tensor the model needs, or has other shapes (nothing is written).
    """
    from .checkpoint import build_meta_model, convert_official, load_official, load_official_state_dict

    state = load_official_state_dict(source)
    # The checking loader on a meta model: every key accounted for, missing/mismatched tensors refused.
    report = load_official(build_meta_model(cfg), state, strict=True)
    converted, _ = convert_official(state, cfg)
    keep = [k for k in build_meta_model(cfg).state_dict() if k != TIED]
    slim = {k: converted[k].detach().contiguous().clone() for k in keep}
    del state, converted
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(slim, out, weights_metadata(slim, cfg, source=Path(source).name, source_sha256=h.hexdigest()))
    lines = [
        f"source: {source} (sha256 {h.hexdigest()})",
        f"slim: {out} ({len(slim)} tensors)",
        report.summary(),
        "",
        "ignored keys (checkpoint name: reason):",
    ]
    lines += [f"  {k}: {report.reasons[k]}" for k in report.ignored]
    Path(report_path or f"{out}.report.txt").write_text("\n".join(lines) + "\n")
    return report.summary()


def convert_for_study(
    source: str | os.PathLike,
    vocab: str | os.PathLike,
    model: dict,
    out: str | os.PathLike,
    report_path: str | os.PathLike,
) -> str:
    """:func:`convert` for the model a study's runs build: ``model`` is ``{"preset", "overrides"}``, the
    vocabulary size and special tokens come from ``vocab`` as in every run."""
    from ..tokenizer import Tokenizer
    from .config import for_tokenizer

    cfg = for_tokenizer(model["preset"], model.get("overrides") or {}, Tokenizer(vocab))
    return convert(source, out, cfg, report_path)
