"""The official mPLUG checkpoint: safe loading, key conversion with a full report, export, parameter counts.

``mplug_base.pth`` (docs/protocol.md, "Base model") stores the pre-training model: CLIP (image and
text towers) under ``visual_encoder``, BERT text encoder, a fusion module with 12 built layers, the decoder, their
momentum copies and the pre-training heads. Our :class:`~vlpeft.model.mplug.MPlug` keeps HF BERT names for the
text side and timm names for the ViT, so loading is:

1. :func:`load_official_state_dict`: ``torch.load(weights_only=True)``; a file that would execute code is refused.
2. :func:`convert_official`: the official fine-tuning normalisation (delete ``fusion.`` and ``bert.`` from keys
   that contain ``fusion`` or ``bert`` but not ``decode``), OpenAI-CLIP -> timm names for
   ``visual_encoder.visual.*`` (timm's own converter), the positional embedding resized to our grid, and every key
   the model does not use reported with a reason.
3. :func:`load_official`: shape checks, missing keys, the tied decoder projection, then the copy.

:func:`export_official` writes our weights back under official names such that export -> convert -> load is the
identity. It writes the NORMALISED names (``text_encoder.encoder...``, ``fusion_encoder.encoder.layer.6...``), not
the raw pre-training names: the raw prefixes (presumably ``text_encoder.bert.`` and ``fusion_encoder.fusion.``) are
inferred, not read from the file, and the official normalisation leaves normalised names unchanged, so the export
loads into both our model and the official fine-tuning code.

Command line: ``python -m vlpeft.model.checkpoint count --preset base`` prints the parameter table;
``python -m vlpeft.model.checkpoint check PATH --preset base`` prints the load report of a checkpoint without
allocating the model's weights.
"""

from __future__ import annotations

from ..console import announce_main
from ..console import run as run_cli

announce_main(__name__, "python -m vlpeft.model.checkpoint", "starting (loading torch)")

import argparse
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import PRESETS, MPlugConfig, preset
from .mplug import MPlug, meta_model

VISUAL_PREFIX = "visual_encoder.visual."
DECODER_WORDS = "text_decoder.bert.embeddings.word_embeddings.weight"
DECODER_PROJ = "text_decoder.cls.predictions.decoder.weight"
DECODER_BIAS = "text_decoder.cls.predictions.bias"
DECODER_PROJ_BIAS = "text_decoder.cls.predictions.decoder.bias"  # tied to DECODER_BIAS in HF 4.x heads

_PRETRAINING_HEADS = {"vision_proj", "text_proj", "itm_head", "temp"}
_FUSION_LAYER = re.compile(r"^fusion_encoder\.encoder\.layer\.(\d+)\.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model (missing keys, other shapes, contradicting tied weights)."""


@dataclass
class LoadReport:
    """What a conversion or load did with every key.

    Attributes:
        loaded: Our parameter names that received a checkpoint tensor.
        ignored: Checkpoint keys (as spelled in the file) that the model does not use.
        missing: Our parameter names the checkpoint does not provide.
        mismatched: ``(our name, checkpoint shape, model shape)`` of tensors that exist on both sides with other
            shapes.
        reasons: Why each ignored key was ignored.
        notes: Conversions worth knowing (positional embedding resized, tied weights filled in).
    """

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ignore(self, key: str, reason: str) -> None:
        self.ignored.append(key)
        self.reasons[key] = reason

    def summary(self, limit: int = 10) -> str:
        """A human-readable account: counts, ignored keys by reason, the first missing and mismatched keys."""
        counts = (
            f"loaded {len(self.loaded)}, ignored {len(self.ignored)}, missing {len(self.missing)}, "
            f"mismatched {len(self.mismatched)}"
        )
        lines = [counts]
        if self.ignored:
            lines.append("ignored by reason:")
            for reason, n in sorted(Counter(self.reasons[k] for k in self.ignored).items(), key=lambda x: -x[1]):
                lines.append(f"  {n:6d}  {reason}")
        if self.missing:
            lines.append(f"missing (first {min(limit, len(self.missing))}): " + ", ".join(self.missing[:limit]))
        if self.mismatched:
            lines.append(f"mismatched (first {min(limit, len(self.mismatched))}):")
            lines += [f"  {n}: checkpoint {list(a)} vs model {list(b)}" for n, a, b in self.mismatched[:limit]]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- model shapes and parameter counts ---------------------------------------------------------------------------


def build_meta_model(cfg: MPlugConfig) -> MPlug:
    """The model on the meta device: names and shapes without allocating or initialising weights."""
    return meta_model(cfg)


@lru_cache(maxsize=8)
def _expected_shapes(cfg: MPlugConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_meta_model(cfg).state_dict().items()}


def expected_shapes(cfg: MPlugConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a plain model of this size (PEFT modules aside) and its shape."""
    return dict(_expected_shapes(cfg))


def parameter_table(cfg: MPlugConfig) -> list[tuple[str, int]]:
    """Parameters per top-level module and ``("total", n)``, tied weights once, counted on the meta device."""
    counts = build_meta_model(cfg).parameter_counts()
    return [(k, v) for k, v in counts.items() if k != "total"] + [("total", counts["total"])]


def format_parameter_table(rows: list[tuple[str, int]]) -> str:
    width = max(len(name) for name, _ in rows)
    total = dict(rows).get("total") or 1
    lines = [f"{'module':<{width}}  {'parameters':>13}  {'share':>6}"]
    lines += [f"{name:<{width}}  {n:>13,}  {100 * n / total:5.1f}%" for name, n in rows]
    return "\n".join(lines)


# -- reading a checkpoint ------------------------------------------------------------------------------------------


def load_official_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of an official (or exported) checkpoint without executing pickled code.

    Takes ``ckpt["model"]``, else ``ckpt["module"]``, else the file's dict itself when it maps names to tensors.
    ``.safetensors`` files are read with safetensors.

    Raises:
        ValueError: The file holds pickled objects other than tensors and plain containers (``weights_only``
            refuses them: such a file could run code when loaded), it is empty, truncated or of another format
            (the message names it), or no state dict is found in it.
    """
    from ..files import load_safetensors, torch_load

    path = Path(path)
    remedy = "Delete it and download it again (or re-save only its state dict in a trusted environment)."
    if path.suffix == ".safetensors":
        return load_safetensors(path, remedy)
    ckpt = torch_load(path, remedy)
    return state_from_checkpoint(ckpt, str(path))


def state_from_checkpoint(ckpt: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: ``ckpt["model"]``, else ``ckpt["module"]``, else ``ckpt`` itself
    when it maps names to tensors.

    Raises:
        ValueError: None of these is found (``source`` names the file in the message).
    """
    state = None
    if isinstance(ckpt, dict):
        state = next((ckpt[k] for k in ("model", "module") if isinstance(ckpt.get(k), dict)), None)
        if state is None and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            state = ckpt
    if state is None:
        top = sorted(map(str, ckpt))[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{source}: no 'model' or 'module' state dict and not a flat name -> tensor dict ({top})")
    return dict(state)


# -- conversion ----------------------------------------------------------------------------------------------------


def normalise_official_key(key: str) -> str:
    """The official fine-tuning code's renaming: keys with ``fusion`` or ``bert`` and without ``decode`` lose the
    substrings ``fusion.`` and ``bert.`` (``text_encoder.bert.encoder...`` -> ``text_encoder.encoder...``)."""
    if ("fusion" in key or "bert" in key) and "decode" not in key:
        return key.replace("fusion.", "").replace("bert.", "")
    return key


def _known_unused(key: str, cfg: MPlugConfig) -> str | None:
    """Why a (normalised) checkpoint key is deliberately not loaded, or None."""
    top = key.split(".", 1)[0]
    if top.endswith("_m"):
        return "momentum copy (pre-training distillation)"
    if top in _PRETRAINING_HEADS:
        return "pre-training head (ITC/ITM)"
    if top.endswith("_queue") or top == "queue_ptr":
        return "pre-training queue"
    if key.endswith("position_ids"):
        return "position_ids buffer"
    if key.startswith("visual_encoder.") and not key.startswith(VISUAL_PREFIX):
        return "CLIP text tower (unused)"
    if key.startswith("fusion_encoder.embeddings."):
        return "fusion embeddings (unused: the fusion module reads the encoders' states)"
    m = _FUSION_LAYER.match(key)
    if m and int(m.group(1)) < cfg.fusion_layer_offset:
        return f"fusion layers 0-{cfg.fusion_layer_offset - 1} (built but never run)"
    if key == DECODER_PROJ_BIAS:
        return "tied to text_decoder.cls.predictions.bias"
    return None


def _clip_to_timm(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ``visual.*`` CLIP tensor under timm's names, by timm's own OpenAI-CLIP converter."""
    from timm.models.vision_transformer import _convert_openai_clip

    # The converter never reads its ``model`` argument; it renames, reshapes class/positional embeddings and turns
    # the image projection ``proj`` into ``head.weight`` (+ a zero ``head.bias``).
    return _convert_openai_clip({key: value}, None, prefix="visual.")


def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """``[1, 1 + g*g, d]`` -> ``[1, 1 + grid*grid, d]``: CLS row kept, the 2-D grid resized bilinearly.

    ``align_corners=False`` and no antialiasing, as the official fine-tuning code's ``F.interpolate(...,
    mode='bilinear')``.
    """
    cls, rest = pos_embed[:, :1], pos_embed[:, 1:]
    old = math.isqrt(rest.shape[1])
    if old * old != rest.shape[1]:
        raise CheckpointError(f"positional embedding with {rest.shape[1]} patch rows is not a square grid")
    if old == grid:
        return pos_embed
    d = rest.shape[-1]
    rest = rest.reshape(1, old, old, d).permute(0, 3, 1, 2).float()
    rest = F.interpolate(rest, size=(grid, grid), mode="bilinear", align_corners=False)
    rest = rest.permute(0, 2, 3, 1).reshape(1, grid * grid, d).to(pos_embed.dtype)
    return torch.cat([cls, rest], dim=1)


def _resolve_tied(
    converted: dict[str, torch.Tensor], origin: dict[str, str], report: LoadReport, a: str, b: str
) -> None:
    """Tied tensors ``a`` and ``b``: accept either from the checkpoint, refuse two different ones."""
    if a in converted and b in converted:
        if converted[a] is not converted[b] and not torch.equal(converted[a], converted[b]):
            raise CheckpointError(f"{origin[a]} and {origin[b]} should be one tied tensor but differ")
    elif a in converted or b in converted:
        have, fill = (a, b) if a in converted else (b, a)
        converted[fill], origin[fill] = converted[have], origin[have]
        report.notes.append(f"{fill} taken from tied {origin[have]}")


def convert_official(state: dict[str, torch.Tensor], cfg: MPlugConfig) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Official checkpoint tensors -> our state-dict names, with the report of every key not used.

    Args:
        state: The checkpoint's state dict (raw pre-training names, normalised names, or our export).
        cfg: The size of the model the tensors are meant for.

    Returns:
        ``(converted, report)``: tensors under our names (shapes unchecked; :func:`load_official` checks them) and a
        report whose ``ignored``/``reasons``/``notes`` are filled.

    Raises:
        CheckpointError: Tied tensors that differ, or a positional embedding that is not a square grid.
    """
    expected = _expected_shapes(cfg)
    report = LoadReport()
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}  # our name -> checkpoint key, for messages

    def put(name: str, value: torch.Tensor, key: str) -> None:
        if name in converted:
            report.ignore(key, f"duplicate of {origin[name]} after normalisation")
        else:
            converted[name], origin[name] = value, key

    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            report.ignore(key, "not a tensor")
            continue
        norm = normalise_official_key(key)
        reason = _known_unused(norm, cfg)
        if reason is not None:
            report.ignore(key, reason)
        elif norm.startswith(VISUAL_PREFIX):
            for timm_key, tensor in _clip_to_timm(norm[len("visual_encoder.") :], value).items():
                name = "visual_encoder." + timm_key
                if name in expected:
                    put(name, tensor, key)
                elif timm_key == "head.weight":
                    report.ignore(key, "CLIP image projection `proj` (mPLUG uses ln_post states)")
                elif timm_key != "head.bias":  # made up by the converter for `proj`
                    report.ignore(key, "not a parameter of this model")
        elif norm in expected:
            put(norm, value, key)
        else:
            report.ignore(key, "not a parameter of this model")

    _resolve_tied(converted, origin, report, DECODER_WORDS, DECODER_PROJ)
    # The head's bias also sits under ``decoder.bias`` (reported as ignored above); use it only as a fallback.
    for key, value in state.items():
        if normalise_official_key(key) == DECODER_PROJ_BIAS and isinstance(value, torch.Tensor):
            converted[DECODER_PROJ_BIAS], origin[DECODER_PROJ_BIAS] = value, key
            _resolve_tied(converted, origin, report, DECODER_BIAS, DECODER_PROJ_BIAS)
            del converted[DECODER_PROJ_BIAS]
            break

    pos = "visual_encoder.pos_embed"
    if pos in converted and pos in expected:
        have, want = tuple(converted[pos].shape), expected[pos]
        if len(have) == 3 and have[0] == 1 and have[2] == want[2] and have[1] != want[1]:
            grid = cfg.image_size // cfg.patch_size
            converted[pos] = resize_pos_embed(converted[pos], grid)
            old = math.isqrt(have[1] - 1)
            report.notes.append(f"positional embedding resized from a {old}x{old} to a {grid}x{grid} grid")
    return converted, report


# -- loading into a model ------------------------------------------------------------------------------------------


def _plain_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers under plain-model names.

    PEFT wrappers (LoRA, serial adapters) keep the wrapped layer as ``base_layer``; its tensors are the pre-trained
    ones under the plain name without ``.base_layer``. Tensors a PEFT method adds are left out.
    """
    plain = _expected_shapes(model.config)
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        canonical = name.replace(".base_layer.", ".")
        if canonical in plain:
            out[canonical] = tensor
    return out


def load_official(
    model: MPlug, path_or_state: str | os.PathLike | dict[str, torch.Tensor], strict: bool = True
) -> LoadReport:
    """Load the official checkpoint (a path or its state dict) into ``model``, in place.

    Works before or after a PEFT method is attached: tensors the method adds are neither required nor touched.

    Args:
        model: The model to fill.
        path_or_state: A checkpoint file (see :func:`load_official_state_dict`), a loaded checkpoint dict or a
            state dict.
        strict: Raise when a tensor the model needs is missing; otherwise load the rest and report it.

    Returns:
        The report (``loaded``, ``ignored`` with reasons, ``missing``, ``mismatched``, notes).

    Raises:
        CheckpointError: Shapes that differ (a checkpoint of another size or architecture; always raised, nothing is
            loaded), or missing tensors with ``strict=True``.
    """
    if isinstance(path_or_state, dict):
        state = state_from_checkpoint(path_or_state)
    else:
        state = load_official_state_dict(path_or_state)
    converted, report = convert_official(state, model.config)
    targets = _plain_tensors(model)
    for name, target in targets.items():
        if name not in converted:
            report.missing.append(name)
        elif tuple(converted[name].shape) != tuple(target.shape):
            report.mismatched.append((name, tuple(converted[name].shape), tuple(target.shape)))
    if report.mismatched:
        raise CheckpointError(
            f"checkpoint does not fit this model ({len(report.mismatched)} tensors have other shapes; another size "
            "or architecture?); first ones:\n"
            + "\n".join(f"  {n}: checkpoint {list(a)} vs model {list(b)}" for n, a, b in report.mismatched[:10])
        )
    if report.missing and strict:
        raise CheckpointError(
            f"checkpoint lacks {len(report.missing)} tensors the model needs; first ones: {report.missing[:10]}"
        )
    with torch.no_grad():
        for name, target in targets.items():
            if name in converted:
                target.copy_(converted[name])
                report.loaded.append(name)
    return report


# -- export --------------------------------------------------------------------------------------------------------

_TIMM_TO_CLIP_BLOCK = {
    "norm1": "ln_1",
    "norm2": "ln_2",
    "attn.qkv.weight": "attn.in_proj_weight",
    "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def _timm_to_clip(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """One of our ViT tensors (timm name without ``visual_encoder.``) under its OpenAI-CLIP name."""
    if name == "cls_token":
        return "class_embedding", tensor.reshape(-1)
    if name == "pos_embed":
        return "positional_embedding", tensor[0]
    if name == "patch_embed.proj.weight":
        return "conv1.weight", tensor
    for timm_name, clip_name in (("norm_pre.", "ln_pre."), ("norm.", "ln_post.")):
        if name.startswith(timm_name):
            return clip_name + name[len(timm_name) :], tensor
    m = re.match(r"^blocks\.(\d+)\.(.+)$", name)
    if m:
        rest = m.group(2)
        for timm_part, clip_part in _TIMM_TO_CLIP_BLOCK.items():
            if rest.startswith(timm_part):
                return f"transformer.resblocks.{m.group(1)}.{clip_part}{rest[len(timm_part) :]}", tensor
    raise ValueError(f"no OpenAI-CLIP name for ViT tensor {name!r}")


def export_official(model: MPlug) -> dict[str, torch.Tensor]:
    """Our pre-trained weights under the official (normalised) names; export -> convert -> load is exact.

    The ViT is written under CLIP names (``visual_encoder.visual.conv1.weight``,
    ``...transformer.resblocks.N.attn.in_proj_weight``...), the text side under the normalised BERT names (see the
    module docstring), the tied decoder projection and its bias under both names as in the official state dict.
    Only plain-model tensors are written: merge a PEFT method first (``method.merge(model)``) to include its effect.
    The tensors share memory with the model, as ``state_dict()`` does.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in _plain_tensors(model).items():
        tensor = tensor.detach()
        if name.startswith("visual_encoder."):
            clip_name, value = _timm_to_clip(name[len("visual_encoder.") :], tensor)
            out[VISUAL_PREFIX + clip_name] = value
        else:
            out[name] = tensor
    out[DECODER_PROJ_BIAS] = out[DECODER_BIAS]
    return out


# -- command line --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlpeft.model.checkpoint", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    count = sub.add_parser("count", help="print the parameter count per module")
    check = sub.add_parser("check", help="convert a checkpoint and print the load report (no weights allocated)")
    check.add_argument("path", type=Path, help="the official checkpoint, e.g. mplug_base.pth")
    for p in (count, check):
        p.add_argument(
            "--preset", default="base", choices=sorted(PRESETS), help="model size (default: %(default)s, mPLUG-base)"
        )
        p.add_argument("--vocab-size", type=int, default=None, help="override the preset's vocabulary size")
        p.add_argument("--image-size", type=int, default=None, help="override the preset's image size (pixels)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("vocab_size", args.vocab_size), ("image_size", args.image_size)) if v}
    cfg = preset(args.preset, **overrides)
    if args.command == "count":
        print(f"mPLUG preset {args.preset!r}")
        print(format_parameter_table(parameter_table(cfg)))
        return 0
    report = load_official(build_meta_model(cfg), args.path, strict=False)  # a bad file: one line, exit 2 (run)
    print(report.summary())
    return 0 if not report.missing else 1


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m vlpeft.model.checkpoint"))
