"""The contract every fine-tuning method follows, and the registry that names them.

A method is selected by name from the config (``build_method("lora", size=8)``) and then

- ``attach(model)``: freezes the base model, inserts its modules and marks exactly its own parameters
  trainable (plus the decoder's prediction head with ``classifier=True``);
- ``closed_form_count(model_config)``: its trainable parameter count from a formula, tested against the counted
  parameters;
- ``merge(model)``: folds training-only structure away (LoRA into the weights, prefix-tuning's MLP into tensors);
- ``save(model, path)`` / ``load(model, path)``: only the trainable parameters, as safetensors, with the method's
  identity in the metadata so that weights of another method or size are refused.

"+ classifier": the decoder's prediction head ``text_decoder.cls.predictions`` (transform + vocabulary
projection + bias). Its projection is tied to the decoder's word embeddings, as in BERT and the official
checkpoint, so tuning the classifier also moves the decoder's input embeddings: the count includes that
matrix once (30522 x 768 = 23.4M parameters at base size).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..model.config import MPlugConfig
from . import registry

TARGETS = ("visual_encoder", "text_encoder", "fusion_encoder", "text_decoder")
DEFAULT_TARGETS = ("text_encoder", "fusion_encoder", "text_decoder")

METHODS: dict[str, type[PeftMethod]] = {}


def register_method(name: str):
    """Class decorator: make a method selectable by ``name`` in the config (described in ``methods.registry``)."""

    def wrap(cls: type[PeftMethod]) -> type[PeftMethod]:
        registry.info(name)  # an implementation without a description would be missing from grid, figures, report
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


@dataclass(frozen=True)
class MethodConfig:
    """Options shared by every method.

    Attributes:
        size: The method's size knob (prompt/prefix length, LoRA rank, adapter bottleneck); ignored by ``full``.
        classifier: Also train the decoder's prediction head ("+ classifier").
        targets: Model parts that receive the method's modules.
    """

    size: int = 8
    classifier: bool = False
    targets: tuple[str, ...] = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"size must be a positive integer, got {self.size!r}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown target module(s) {unknown}; known: {list(TARGETS)}")
        if not self.targets:
            raise ValueError("targets must name at least one module")


class PeftMethod:
    """Base class: subclasses set ``Config`` and implement ``inject`` and ``method_count``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    supported_targets: ClassVar[tuple[str, ...]] = TARGETS

    def __init__(self, cfg: MethodConfig) -> None:
        bad = [t for t in cfg.targets if t not in self.supported_targets]
        if bad:
            raise ValueError(
                f"method {self.name!r} does not support target(s) {bad}; supported: {list(self.supported_targets)}"
            )
        self.cfg = cfg

    # -- to implement -----------------------------------------------------------------------------------------
    def inject(self, model: nn.Module) -> None:
        raise NotImplementedError

    def method_count(self, mc: MPlugConfig) -> int:
        """Closed-form count of the parameters ``inject`` adds (training-time structure)."""
        raise NotImplementedError

    def merge(self, model: nn.Module) -> None:
        """Fold training-only structure away; outputs must not change. Default: nothing to fold."""

    def merged_count(self, mc: MPlugConfig) -> int | None:
        """Trainable parameters left after ``merge`` when it removes training-only parameters (prefix-tuning's
        reparametrising MLP); None (the default) when they are the trainable ones."""
        return None

    def trains_visual_encoder(self) -> bool:
        """Whether training changes the ViT's output: such a run must read images, never ViT features computed
        beforehand (the visual-feature store). See ``vlpeft.methods.scope``."""
        from .scope import trains_visual_encoder

        return trains_visual_encoder(self.name, {"targets": list(self.cfg.targets)})

    def record_info(self) -> dict:
        """Derived settings the run record states beside the config (e.g. LoRA's scaling). Default: none."""
        return {}

    # -- shared -----------------------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        self.inject(model)
        if self.cfg.classifier:
            for p in model.text_decoder.cls.predictions.parameters():
                p.requires_grad_(True)
        model.peft_method = self.name
        return model

    def closed_form_count(self, mc: MPlugConfig) -> int:
        """Trainable parameters from formulas: the method's own, plus the head with ``classifier=True``."""
        return self.method_count(mc) + (classifier_count(mc) if self.cfg.classifier else 0)

    def identity(self) -> dict[str, str]:
        d = asdict(self.cfg)
        d["targets"] = list(self.cfg.targets)
        return {"method": self.name, "config": json.dumps(d, sort_keys=True)}

    def save(self, model: nn.Module, path: str | Path) -> None:
        from ..model.slim import write_safetensors

        tensors = {n: p.detach().contiguous().cpu() for n, p in trainable_parameters(model).items()}
        write_safetensors(tensors, path, self.identity())

    def load(self, model: nn.Module, path: str | Path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("method") != self.name or meta.get("config") != self.identity()["config"]:
                raise ValueError(
                    f"{path} holds weights for method {meta.get('method')!r} with {meta.get('config')}, "
                    f"not {self.name!r} with {self.identity()['config']}"
                )
            expected = trainable_parameters(model)
            keys = set(f.keys())
            missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
            if missing or extra:
                raise ValueError(f"{path}: missing {missing[:5]}, unexpected {extra[:5]}")
            with torch.no_grad():
                for name, p in expected.items():
                    t = f.get_tensor(name)
                    if t.shape != p.shape:
                        raise ValueError(f"{path}: {name} has shape {list(t.shape)}, model wants {list(p.shape)}")
                    p.copy_(t)


class WrappedLinear(nn.Module):
    """A Linear that a PEFT module wraps: ``base_layer`` is the original, ``rows`` the output rows the method
    changes (all by default), ``merged`` whether its change is folded into the base weight. Reads like the Linear it
    replaces (``weight``, ``in_features``, ``out_features``), so code that inspects the model needs no case for it."""

    def __init__(self, base_layer: nn.Linear, rows: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.rows = rows or (0, base_layer.out_features)
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters that require grad, tied ones once, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable_parameters(model).values())


def classifier_count(mc: MPlugConfig) -> int:
    d, v = mc.hidden_size, mc.vocab_size
    return (d * d + d) + 2 * d + v + v * d  # transform.dense, transform.LayerNorm, bias, tied projection


def target_layers(model: nn.Module, targets: tuple[str, ...]) -> list[nn.Module]:
    """The BERT blocks of the targeted text-side modules (ViT blocks are handled by each method)."""
    layers: list[nn.Module] = []
    if "text_encoder" in targets:
        layers += list(model.text_encoder.encoder)
    if "fusion_encoder" in targets:
        layers += list(model.fusion_encoder.encoder)
    if "text_decoder" in targets:
        layers += list(model.text_decoder.bert.encoder)
    return layers


def n_target_layers(mc: MPlugConfig, targets: tuple[str, ...]) -> tuple[int, int]:
    """(blocks without cross-attention, blocks with cross-attention) among the targets."""
    plain = mc.text_layers if "text_encoder" in targets else 0
    cross = (mc.fusion_layers if "fusion_encoder" in targets else 0) + (
        mc.decoder_layers if "text_decoder" in targets else 0
    )
    return plain, cross


def build_method(name: str, **options) -> PeftMethod:
    """Instantiate a registered method from its name and options (``size``, ``classifier``, ``targets``...)."""
    import_implementations()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    cls = METHODS[name]
    known = set(cls.Config.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {name!r}; known: {sorted(known)}")
    return cls(cls.Config(**options))


def method_names() -> list[str]:
    import_implementations()
    return sorted(METHODS)


#: Modules of this package that hold no method implementation (importing them registers nothing).
_NOT_IMPLEMENTATIONS = frozenset({"base", "registry", "scope", "table"})


def import_implementations() -> None:
    """Import every module of ``vlpeft.methods`` (their ``@register_method`` classes register as a side effect), so
    that a new method needs no edit here, only its module and its description in ``registry``; the modules that
    implement no method (``_NOT_IMPLEMENTATIONS``: ``table`` is a command-line entry point) are left out."""
    import importlib
    import pkgutil

    package = __name__.rpartition(".")[0]
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name not in _NOT_IMPLEMENTATIONS and not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")


__all__ = [
    "METHODS",
    "MethodConfig",
    "PeftMethod",
    "build_method",
    "classifier_count",
    "count_trainable",
    "import_implementations",
    "method_names",
    "register_method",
    "trainable_parameters",
]
