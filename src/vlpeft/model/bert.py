"""BERT blocks with Hugging Face's parameter names, owned here so that PEFT methods can enter them.

The names (``embeddings.word_embeddings``, ``encoder.layer.N.attention.self.query``, ``crossattention``,
``intermediate.dense``, ``output.LayerNorm`` ...) equal transformers' ``BertModel`` so that the official mPLUG
checkpoint loads without renaming and the blocks can be checked numerically against transformers
(``tests/unit/test_model_oracle.py``).

Hooks used by the PEFT methods (``vlpeft.methods``), all ``None`` on a plain model:
- ``BertSelfAttention.prefix``: a callable returning prefix keys and values ``([p, d], [p, d])`` that are
  prepended to the keys/values of a self-attention (prefix-tuning).
- ``BertSelfOutput.adapter_parallel`` / ``BertOutput.adapter_parallel``: a module applied to the sub-layer's
  input whose output is added beside the sub-layer (parallel adapter, He et al. 2022).
Serial adapters and LoRA wrap ``nn.Linear`` children instead and need no hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import MPlugConfig


def extended_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a ``[B, L]`` 0/1 key mask into an additive ``[B, 1, 1, L]`` mask."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def causal_mask(key_mask: torch.Tensor, query_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``[B, 1, Lq, Lk]`` mask: padding of ``key_mask`` plus causality for the last ``query_len`` keys."""
    key_len = key_mask.shape[1]
    past = key_len - query_len
    q_pos = torch.arange(query_len, device=key_mask.device)[:, None] + past
    k_pos = torch.arange(key_len, device=key_mask.device)[None, :]
    allowed = (k_pos <= q_pos)[None, None] & key_mask[:, None, None, :].bool()
    return torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


@dataclass
class LayerCache:
    """Keys/values a decoder layer keeps between generation steps, as ``[B, H, L, hd]``."""

    self_k: torch.Tensor | None = None
    self_v: torch.Tensor | None = None
    cross_k: torch.Tensor | None = None
    cross_v: torch.Tensor | None = None

    def reorder(self, index: torch.Tensor) -> None:
        """Follow the beams chosen at a step. Cross-attention keys are equal within a batch item's beams and
        beams never move across items, so only the self-attention part needs reordering."""
        if self.self_k is not None:
            self.self_k = self.self_k.index_select(0, index)
            self.self_v = self.self_v.index_select(0, index)


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.max_positions = cfg.max_position_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_length: int = 0,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        length = inputs_embeds.shape[1]
        if past_length + length > self.max_positions:
            raise ValueError(
                f"sequence of {past_length + length} tokens exceeds max_position_embeddings={self.max_positions}"
            )
        positions = torch.arange(past_length, past_length + length, device=inputs_embeds.device)
        types = torch.zeros_like(positions)
        h = inputs_embeds + self.position_embeddings(positions)[None] + self.token_type_embeddings(types)[None]
        return self.dropout(self.LayerNorm(h))


class BertSelfAttention(nn.Module):
    """Multi-head attention (``query``/``key``/``value``); cross-attention when given ``kv_states``."""

    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_dim = d // self.num_heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.dropout_p = cfg.attention_dropout
        self.prefix = None  # set by prefix-tuning

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None = None,
        kv_states: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        b = hidden.shape[0]
        q = self._heads(self.query(hidden))
        if kv_states is None:
            k, v = self._heads(self.key(hidden)), self._heads(self.value(hidden))
            if cache is not None:
                if cache.self_k is not None:
                    k = torch.cat([cache.self_k, k], dim=2)
                    v = torch.cat([cache.self_v, v], dim=2)
                cache.self_k, cache.self_v = k, v
            if self.prefix is not None:
                pk, pv = self.prefix()
                pk = self._heads(pk[None].to(k.dtype)).expand(b, -1, -1, -1)
                pv = self._heads(pv[None].to(v.dtype)).expand(b, -1, -1, -1)
                k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
                if mask is not None:
                    # Prefix positions are visible to every query.
                    mask = F.pad(mask, (pk.shape[2], 0), value=0.0)
        elif cache is not None and cache.cross_k is not None:
            k, v = cache.cross_k, cache.cross_v
        else:
            k, v = self._heads(self.key(kv_states)), self._heads(self.value(kv_states))
            if cache is not None:
                cache.cross_k, cache.cross_v = k, v
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(b, -1, self.num_heads * self.head_dim)


class BertSelfOutput(nn.Module):
    """Projection, dropout, residual and LayerNorm after an attention (the paper's AL after MHA)."""

    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.adapter_parallel = None  # set by the parallel adapter

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(hidden))
        if self.adapter_parallel is not None:
            h = h + self.adapter_parallel(residual)
        return self.LayerNorm(h + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, hidden, mask=None, kv_states=None, cache=None) -> torch.Tensor:
        return self.output(self.self(hidden, mask, kv_states, cache), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class BertOutput(BertSelfOutput):
    """FFN output projection, residual and LayerNorm (the paper's AL after FFN)."""

    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__(cfg)
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)


class BertLayer(nn.Module):
    """A BERT block; with ``cross=True`` a cross-attention sits between self-attention and FFN."""

    def __init__(self, cfg: MPlugConfig, cross: bool = False) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.crossattention = BertAttention(cfg) if cross else None
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None = None,
        kv_states: torch.Tensor | None = None,
        kv_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        hidden = self.attention(hidden, mask, cache=cache)
        if self.crossattention is not None and kv_states is not None:
            hidden = self.crossattention(hidden, kv_mask, kv_states=kv_states, cache=cache)
        return self.feed_forward(hidden)


class BertEncoder(nn.Module):
    """``layer`` holds the blocks; ``offset`` keeps official indices (the fusion module's layers are 6..11)."""

    def __init__(self, cfg: MPlugConfig, num_layers: int, cross: bool, offset: int = 0) -> None:
        super().__init__()
        self.offset = offset
        self.layer = nn.ModuleDict({str(offset + i): BertLayer(cfg, cross) for i in range(num_layers)})

    def __iter__(self):
        return iter(self.layer.values())

    def __len__(self) -> int:
        return len(self.layer)


class BertTextEncoder(nn.Module):
    """BERT without pooler, self-attention only (mPLUG's ``text_encoder``)."""

    def __init__(self, cfg: MPlugConfig, num_layers: int) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg, num_layers, cross=False)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.embeddings(input_ids, inputs_embeds=inputs_embeds)
        mask = extended_mask(attention_mask, h.dtype)
        for layer in self.encoder:
            h = layer(h, mask)
        return h


class BertPredictionHead(nn.Module):
    """``cls.predictions``: transform (dense, GELU, LayerNorm) then the vocabulary projection."""

    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.transform.LayerNorm(F.gelu(self.transform.dense(hidden)))
        return self.decoder(h) + self.bias


class BertDecoder(nn.Module):
    """mPLUG's ``text_decoder``: causal BERT with cross-attention (``bert``) and a tied LM head (``cls``)."""

    def __init__(self, cfg: MPlugConfig) -> None:
        super().__init__()
        self.bert = nn.Module()
        self.bert.embeddings = BertEmbeddings(cfg)
        self.bert.encoder = BertEncoder(cfg, cfg.decoder_layers, cross=True)
        self.cls = nn.Module()
        self.cls.predictions = BertPredictionHead(cfg)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Tie the head's projection to the decoder's word embeddings (as BertLMHeadModel does)."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def new_cache(self) -> list[LayerCache]:
        return [LayerCache() for _ in self.bert.encoder]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_states: torch.Tensor,
        encoder_mask: torch.Tensor,
        cache: list[LayerCache] | None = None,
        past_length: int = 0,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """Logits ``[B, L, V]`` for ``input_ids``; ``attention_mask`` covers past and current tokens."""
        h = self.bert.embeddings(input_ids, past_length=past_length)
        mask = causal_mask(attention_mask, input_ids.shape[1], h.dtype)
        kv_mask = extended_mask(encoder_mask, h.dtype)
        for i, layer in enumerate(self.bert.encoder):
            h = layer(h, mask, encoder_states, kv_mask, cache=None if cache is None else cache[i])
        if return_hidden:
            return h
        return self.cls.predictions(h)


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation (normal(0, 0.02), zero bias, unit LayerNorm)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
