"""Model sizes. One architecture (mPLUG), several sizes: the official base and a tiny one for CPU studies.

Every field that differs between sizes is here; the modules read nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class MPlugConfig:
    """Sizes of an mPLUG model.

    Attributes:
        vocab_size: Word-piece vocabulary size (30522 for bert-base-uncased).
        hidden_size: Width of the text encoder, fusion module and decoder.
        num_attention_heads: Heads of every BERT attention.
        intermediate_size: FFN width of the BERT blocks.
        max_position_embeddings: Learned absolute positions of the BERT embeddings.
        type_vocab_size: Token-type vocabulary (BERT's segment embedding).
        layer_norm_eps: LayerNorm epsilon of the BERT blocks.
        hidden_dropout: Dropout after projections and embeddings.
        attention_dropout: Dropout on attention probabilities (BERT blocks).
        text_layers: Layers of the text encoder.
        fusion_layers: Layers of the fusion module that run.
        fusion_layer_offset: Index of the first fusion layer that runs. The official checkpoint builds 12
            fusion layers and runs 6..11, so the parameter names start at 6.
        fusion_connected_layers: Local indices (0-based within the running layers) of the connected-attention
            layers; the others are asymmetric co-attention layers.
        decoder_layers: Layers of the text decoder.
        image_size: Input resolution of the visual encoder.
        patch_size: ViT patch size.
        vision_width: ViT width; must equal hidden_size (mPLUG-base has no visual projection).
        vision_layers: ViT blocks.
        vision_heads: ViT heads.
        vision_attention_dropout: Attention dropout inside the ViT (0.1 in mPLUG).
        bos_token_id: Decoder start token ([CLS]).
        eos_token_id: End of sequence ([SEP]).
        pad_token_id: Padding ([PAD]).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    text_layers: int = 6
    fusion_layers: int = 6
    fusion_layer_offset: int = 6
    fusion_connected_layers: tuple[int, ...] = field(default=(3,))
    decoder_layers: int = 12
    image_size: int = 256
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_attention_dropout: float = 0.1
    bos_token_id: int = 101
    eos_token_id: int = 102
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fusion_connected_layers", tuple(self.fusion_connected_layers))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.vision_width != self.hidden_size:
            raise ValueError(
                f"vision_width ({self.vision_width}) must equal hidden_size ({self.hidden_size}): "
                "mPLUG-base feeds ViT states to BERT cross-attention without a projection"
            )
        bad = [i for i in self.fusion_connected_layers if not 0 <= i < self.fusion_layers]
        if bad:
            raise ValueError(f"fusion_connected_layers {bad} outside 0..{self.fusion_layers - 1}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("text_layers", "fusion_layers", "decoder_layers", "vision_layers", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def num_image_tokens(self) -> int:
        """CLS plus patches."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fusion_connected_layers"] = list(self.fusion_connected_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MPlugConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**d)


PRESETS: dict[str, dict] = {
    # mPLUG-base at the paper's 256 px.
    "base": {},
    # The embedded mini study: same code, tiny sizes. vocab_size is set from the trained tokenizer.
    "tiny": dict(
        hidden_size=64,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        text_layers=1,
        fusion_layers=2,
        fusion_layer_offset=0,
        fusion_connected_layers=(1,),
        decoder_layers=2,
        image_size=64,
        patch_size=16,
        vision_width=64,
        vision_layers=2,
        vision_heads=2,
    ),
}


def preset(name: str, **overrides) -> MPlugConfig:
    """Build a named size, with optional overrides (e.g. ``vocab_size``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return MPlugConfig(**{**PRESETS[name], **overrides})


def for_tokenizer(name: str, overrides: dict, tokenizer) -> MPlugConfig:
    """The size a run builds: preset ``name`` with ``overrides``, vocabulary and special tokens from ``tokenizer``
    unless the overrides set them."""
    o = dict(overrides)
    o.setdefault("vocab_size", tokenizer.vocab_size)
    o.setdefault("bos_token_id", tokenizer.cls_id)
    o.setdefault("eos_token_id", tokenizer.sep_id)
    o.setdefault("pad_token_id", tokenizer.pad_id)
    return preset(name, **o)
