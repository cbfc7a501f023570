"""Our LoRA and prompt-tuning against huggingface/peft, with the same weights.

(a) ``LoRALinear`` equals peft's LoRA layer on a small torch model (forward, merge, and the row-restricted form
    used on the ViT's fused qkv projection, which equals peft's LoRA with B zero-padded on the value rows).
(b) Prompt-tuning as ``MPlug.encode`` does it equals peft's prompt tuning on transformers' ``BertModel`` (peft
    0.21, task FEATURE_EXTRACTION: virtual token embeddings concatenated before ``inputs_embeds``, ones prepended
    to the attention mask, positions counted from the first virtual token).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
# peft's prompt-learning wrapper asks transformers for a renamed attribute; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

from vlpeft.methods.base import build_method  # noqa: E402  (after the importorskips)
from vlpeft.methods.lora import LoRALinear  # noqa: E402  (after the importorskips)
from vlpeft.model.config import preset  # noqa: E402  (after the importorskips)
from vlpeft.model.mplug import MPlug  # noqa: E402  (after the importorskips)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- (a) LoRA ---------------------------------------------------------------------------------------------------
class TwoLinears(nn.Module):
    def __init__(self, d_in: int = 12, d_out: int = 10) -> None:
        super().__init__()
        self.lin0 = nn.Linear(d_in, d_out)
        self.lin1 = nn.Linear(d_out, d_out)
        self.head = nn.Linear(d_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin1(torch.relu(self.lin0(x)))))


def peft_lora(model: nn.Module, r: int, alpha: float, targets: list[str]) -> nn.Module:
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    return peft.get_peft_model(copy.deepcopy(model), cfg)


def ours_from_peft(model: nn.Module, theirs: nn.Module, r: int, alpha: float, targets: list[str]) -> nn.Module:
    """Our LoRA on a copy of ``model`` with peft's A and B."""
    ours = copy.deepcopy(model)
    for name in targets:
        wrapper = LoRALinear(getattr(ours, name), r, alpha)
        layer = theirs.base_model.model.get_submodule(name)
        with torch.no_grad():
            wrapper.lora_A.weight.copy_(layer.lora_A["default"].weight)
            wrapper.lora_B.weight.copy_(layer.lora_B["default"].weight)
        setattr(ours, name, wrapper)
    return ours


@pytest.mark.parametrize(("r", "alpha"), [(2, 16.0), (4, 4.0), (8, 1.0)])
def test_lora_linear_equals_peft(r: int, alpha: float) -> None:
    torch.manual_seed(0)
    model = TwoLinears()
    targets = ["lin0", "lin1"]
    theirs = peft_lora(model, r, alpha, targets)
    with torch.no_grad():
        for name in targets:  # B is zero at init: make the update visible
            theirs.base_model.model.get_submodule(name).lora_B["default"].weight.normal_(std=0.3)
    ours = ours_from_peft(model, theirs, r, alpha, targets)
    assert ours.lin0.scaling == theirs.base_model.model.lin0.scaling["default"] == alpha / r

    x = torch.randn(5, 7, 12)
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
        assert not torch.allclose(expected, model(x), atol=1e-4), "the LoRA update should change the output"
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)

        # Merged: peft folds B A into the base weight; so must we, giving the same weights and outputs.
        for name in targets:
            getattr(ours, name).merge()
        merged = theirs.merge_and_unload()
        for name in targets:
            torch.testing.assert_close(getattr(ours, name).weight, getattr(merged, name).weight, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours(x), merged(x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)


def test_lora_on_qkv_rows_equals_peft_with_zero_value_rows() -> None:
    """LoRA on the query and key rows of a fused qkv projection = peft's LoRA with B's value rows at zero."""
    torch.manual_seed(1)
    d, r, alpha = 8, 2, 4.0

    class FusedQKV(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(d, 3 * d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.qkv(x)

    model = FusedQKV()
    theirs = peft_lora(model, r, alpha, ["qkv"])
    layer = theirs.base_model.model.qkv
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(std=0.3)
        layer.lora_B["default"].weight[2 * d :] = 0.0
    ours = LoRALinear(copy.deepcopy(model.qkv), r, alpha, rows=(0, 2 * d))
    with torch.no_grad():
        ours.lora_A.weight.copy_(layer.lora_A["default"].weight)
        ours.lora_B.weight.copy_(layer.lora_B["default"].weight[: 2 * d])
    assert ours.lora_B.weight.shape == (2 * d, r)

    x = torch.randn(3, 5, d)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-6, atol=1e-6)
        ours.merge()
        torch.testing.assert_close(ours.weight, theirs.merge_and_unload().qkv.weight, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)


# -- (b) prompt-tuning ------------------------------------------------------------------------------------------
def hf_bert_like(mc) -> nn.Module:
    """transformers' BertModel with the sizes of our text encoder (no pooler, dropout off)."""
    cfg = transformers.BertConfig(
        vocab_size=mc.vocab_size,
        hidden_size=mc.hidden_size,
        num_hidden_layers=mc.text_layers,
        num_attention_heads=mc.num_attention_heads,
        intermediate_size=mc.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=mc.max_position_embeddings,
        type_vocab_size=mc.type_vocab_size,
        layer_norm_eps=mc.layer_norm_eps,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=mc.pad_token_id,
    )
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


@pytest.mark.parametrize("p", [1, 5])
def test_prompt_tuning_equals_peft_on_bert(p: int) -> None:
    torch.manual_seed(0)
    mc = preset("tiny", vocab_size=128, text_layers=2)
    model = MPlug(mc)
    build_method("prompt", size=p).attach(model)
    model.eval()
    with torch.no_grad():
        model.prompt.weight.normal_(std=0.5)  # not rows of the table: any vectors must go through the same way

    bert = hf_bert_like(mc)
    result = bert.load_state_dict(model.text_encoder.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all("position_ids" in k for k in result.missing_keys), result.missing_keys
    theirs = peft.get_peft_model(
        bert, peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=p)
    ).eval()
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(model.prompt.weight)

    # Our text encoder's output, captured while MPlug.encode runs (prompt-tuning's real path).
    captured = {}
    handle = model.text_encoder.register_forward_hook(lambda _m, _a, out: captured.setdefault("text", out))
    ids = torch.randint(5, mc.vocab_size, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    ids = ids * mask
    with torch.no_grad():
        model.encode(torch.randn(2, 3, mc.image_size, mc.image_size), ids, mask)
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        plain = theirs.get_base_model()(input_ids=ids, attention_mask=mask).last_hidden_state
    handle.remove()
    ours = captured["text"]
    assert not torch.allclose(expected[:, p:], plain, atol=1e-3), "the prompt should change the real tokens' states"
    assert ours.shape == expected.shape == (2, p + 6, mc.hidden_size)
    real = torch.cat([torch.ones(2, p, dtype=torch.bool), mask.bool()], dim=1)
    # The real tokens (and the virtual ones, which both compute the same way) agree; padding rows are unused.
    torch.testing.assert_close(ours[real], expected[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[:, p:][mask.bool()], expected[:, p:][mask.bool()], rtol=1e-5, atol=1e-5)
