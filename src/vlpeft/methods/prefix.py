"""Prefix-tuning (Li & Liang, ACL 2021, arXiv:2101.00190), eq. 3 of the study.

``p`` key and value vectors are prepended in the self-attention of every targeted block (text encoder, every
fusion layer, decoder; the connected-attention layer's joint self-attention too). During training they are
produced by a reparametrising MLP, as Li & Liang do for stability: ``P = MLP(E)`` with a shared ``E`` of shape
``[p, d]`` and ``MLP: d -> reparam_hidden -> n_blocks * 2 * d`` (tanh). ``merge`` evaluates the MLP once and keeps
only the resulting tensors (``n_blocks * 2 * p * d`` numbers), which is also what ``save`` writes after merging.
The prefix is outside the key/value cache, so it works unchanged with cached generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model.config import MPlugConfig
from .base import MethodConfig, PeftMethod, classifier_count, n_target_layers, register_method, target_layers


class PrefixEncoder(nn.Module):
    def __init__(self, length: int, dim: int, n_blocks: int, hidden: int) -> None:
        super().__init__()
        self.length, self.dim, self.n_blocks = length, dim, n_blocks
        self.embedding = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, n_blocks * 2 * dim))
        self._cache: torch.Tensor | None = None

    def merged(self) -> bool:
        return isinstance(self.mlp, nn.Identity)

    def compute(self) -> torch.Tensor:
        """``[n_blocks, 2, p, d]``; computed once per model forward (the cache is reset by a pre-hook)."""
        if self.merged():
            return self.embedding
        if self._cache is None:
            out = self.mlp(self.embedding)  # [p, n_blocks * 2 * d]
            self._cache = out.view(self.length, self.n_blocks, 2, self.dim).permute(1, 2, 0, 3)
        return self._cache

    def reset(self) -> None:
        self._cache = None

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged():
            self.reset()
            value = self.compute().detach().clone()
            self.embedding = nn.Parameter(value, requires_grad=self.embedding.requires_grad)
            self.mlp = nn.Identity()
            self.reset()


class _PrefixView:
    """What an attention calls: block ``i``'s (keys, values). A plain object, so no module is registered twice."""

    def __init__(self, encoder: PrefixEncoder, index: int) -> None:
        self.encoder, self.index = encoder, index

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.encoder.compute()[self.index]
        return kv[0], kv[1]


class _ResetPrefix:
    """Forward (pre-)hook that drops the encoder's per-pass cache.

    An object rather than a closure, so that ``copy.deepcopy(model)`` gives hooks that reset the copy's own encoder
    and the model stays picklable. Resetting after the pass as well keeps no autograd graph alive between passes (a
    cached non-leaf tensor cannot be deep-copied).
    """

    def __init__(self, encoder: PrefixEncoder) -> None:
        self.encoder = encoder

    def __call__(self, *_) -> None:
        self.encoder.reset()


@dataclass(frozen=True)
class PrefixConfig(MethodConfig):
    """``size`` is the prefix length p; ``reparam_hidden`` the MLP width used during training."""

    reparam_hidden: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reparam_hidden <= 0:
            raise ValueError(f"reparam_hidden must be positive, got {self.reparam_hidden}")


@register_method("prefix")
class PrefixTuning(PeftMethod):
    Config = PrefixConfig
    supported_targets = ("text_encoder", "fusion_encoder", "text_decoder")

    def inject(self, model: nn.Module) -> None:
        layers = target_layers(model, self.cfg.targets)
        d = model.config.hidden_size
        dev = layers[0].attention.self.query.weight.device
        enc = PrefixEncoder(self.cfg.size, d, len(layers), self.cfg.reparam_hidden).to(dev)
        model.prefix_encoder = enc
        for i, layer in enumerate(layers):
            layer.attention.self.prefix = _PrefixView(enc, i)
        # A fresh MLP evaluation per forward pass (of the model, or of any of its parts used in generation).
        for part in (model, model.text_encoder, model.fusion_encoder, model.text_decoder):
            hook = _ResetPrefix(enc)
            part.register_forward_pre_hook(hook)
            part.register_forward_hook(hook)

    def method_count(self, mc: MPlugConfig) -> int:
        plain, cross = n_target_layers(mc, self.cfg.targets)
        n, d, h, p = plain + cross, mc.hidden_size, self.cfg.reparam_hidden, self.cfg.size
        return p * d + (d * h + h) + (h * n * 2 * d + n * 2 * d)

    def merged_count(self, mc: MPlugConfig) -> int:
        """Trainable parameters left after ``merge``: the prefix tensors (plus the head with ``classifier=True``)."""
        plain, cross = n_target_layers(mc, self.cfg.targets)
        head = classifier_count(mc) if self.cfg.classifier else 0
        return (plain + cross) * 2 * self.cfg.size * mc.hidden_size + head

    def merge(self, model: nn.Module) -> None:
        model.prefix_encoder.merge()
