"""Prompt-tuning (Lester et al., 2021, arXiv:2104.08691), eq. 2 of the study.

``p`` learnable vectors are prepended to the text encoder's input word embeddings (before BERT adds position
embeddings, as huggingface/peft does for encoder models); the prompt mask grows by ``p``. Initialised from
randomly drawn rows of the frozen word-embedding table, following Lester et al.'s vocabulary initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.config import MPlugConfig
from .base import PeftMethod, register_method


class PromptEmbedding(nn.Module):
    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(length, dim))

    def forward(self) -> torch.Tensor:
        return self.weight


@register_method("prompt")
class PromptTuning(PeftMethod):
    supported_targets = ("text_encoder", "fusion_encoder", "text_decoder")

    def inject(self, model: nn.Module) -> None:
        if "text_encoder" not in self.cfg.targets:
            raise ValueError("prompt-tuning prepends to the text encoder's input: targets must include text_encoder")
        table = model.text_encoder.embeddings.word_embeddings.weight
        prompt = PromptEmbedding(self.cfg.size, table.shape[1]).to(table.device)
        with torch.no_grad():
            rows = torch.randint(1000 if table.shape[0] > 2000 else 0, table.shape[0], (self.cfg.size,))
            prompt.weight.copy_(table[rows])
        model.prompt = prompt

    def method_count(self, mc: MPlugConfig) -> int:
        return self.cfg.size * mc.hidden_size
