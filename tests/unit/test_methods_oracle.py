"""Our LoRA, prompt-tuning, DoRA and (IA)^3 against huggingface/peft, with the same weights.

(a) ``LoRALinear`` equals peft's LoRA layer on a small torch model (forward, merge, and the row-restricted form
    used on the ViT's fused qkv projection, which equals peft's LoRA with B zero-padded on the value rows).
(b) Prompt-tuning as ``MPlug.encode`` does it equals peft's prompt tuning on transformers' ``BertModel`` (peft
    0.21, task FEATURE_EXTRACTION: virtual token embeddings concatenated before ``inputs_embeds``, ones prepended
    to the attention mask, positions counted from the first virtual token).
(c, d) DoRA (peft's ``use_dora=True``) on W_q, W_k and (IA)^3 (peft's ``IA3Config``) on keys, values and the FFN's
    intermediate activations, attached to our text encoder, equal peft on transformers' ``BertModel`` loaded with
    the same weights: initial values, outputs and gradients at initialisation and after SGD steps, merged weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
# peft's prompt-learning wrapper asks transformers for a renamed attribute; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.usefixtures("one_thread"),  # tiny tensors: one intra-op thread (tests/conftest.py)
]

from vlpeft.methods.base import build_method  # noqa: E402  (after the importorskips)
from vlpeft.methods.lora import LoRALinear  # noqa: E402  (after the importorskips)
from vlpeft.model.config import preset  # noqa: E402  (after the importorskips)
from vlpeft.model.mplug import MPlug  # noqa: E402  (after the importorskips)


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


# -- (c) DoRA and (d) (IA)^3 on a BERT of our block layout ------------------------------------------------------
def _peft_pairs(model: MPlug, theirs: nn.Module, kind: str) -> list[tuple[nn.Parameter, nn.Parameter, str]]:
    """(ours, peft's, name) for every trainable tensor of the method, matched by module path."""
    from vlpeft.methods.dora import DoRALinear
    from vlpeft.methods.ia3 import IA3Linear

    pairs = []
    for path, module in model.text_encoder.named_modules():
        layer = theirs.base_model.model.get_submodule(path) if isinstance(module, (DoRALinear, IA3Linear)) else None
        if isinstance(module, DoRALinear):
            pairs += [
                (module.lora_A.weight, layer.lora_A["default"].weight, f"{path}.lora_A"),
                (module.lora_B.weight, layer.lora_B["default"].weight, f"{path}.lora_B"),
                (module.magnitude, layer.lora_magnitude_vector["default"].weight, f"{path}.magnitude"),
            ]
        elif isinstance(module, IA3Linear):
            pairs.append((module.ia3_scale, layer.ia3_l["default"], f"{path}.ia3"))
    assert pairs, kind
    return pairs


def _text_states(model: MPlug, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model.text_encoder(ids, mask)


@pytest.mark.parametrize(("name", "r"), [("dora", 2), ("dora", 4), ("ia3", 1)])
def test_dora_and_ia3_equal_peft_on_bert(name: str, r: int) -> None:
    """Same outputs and same gradients at initialisation and after two gradient steps; same merged weights."""
    torch.manual_seed(0)
    mc = preset("tiny", vocab_size=128, text_layers=2)
    model = MPlug(mc)
    bert = hf_bert_like(mc)
    result = bert.load_state_dict(model.text_encoder.state_dict(), strict=False)
    assert not result.unexpected_keys
    build_method(name, size=r, targets=["text_encoder"]).attach(model)
    model.eval()
    if name == "dora":
        # Our placement (W_q, W_k); lora_alpha = r gives scaling 1, the study's eq. 13.
        cfg = peft.LoraConfig(r=r, lora_alpha=r, target_modules=["query", "key"], lora_dropout=0.0, use_dora=True)
    else:
        # The (IA)^3 paper's placement: keys, values, and the FFN's intermediate activations (the input of the
        # block's output.dense; peft's BERT default would also scale the attention's output.dense input).
        ffn = r".*\.layer\.\d+\.output\.dense"
        cfg = peft.IA3Config(target_modules=rf"{ffn}|.*\.(key|value)", feedforward_modules=ffn)
    theirs = peft.get_peft_model(bert, cfg).eval()
    pairs = _peft_pairs(model, theirs, name)
    assert sum(p.numel() for p, _, _ in pairs) == sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    with torch.no_grad():
        for ours, ref, n in pairs:
            if n.endswith("lora_A"):  # random at init: take peft's draw
                ours.copy_(ref)
            else:  # B = 0, magnitude = ||W|| per row, (IA)^3 vectors = 1: both must initialise the same
                torch.testing.assert_close(ours, ref.reshape(ours.shape), rtol=1e-6, atol=1e-6, msg=n)

    ids = torch.randint(5, mc.vocab_size, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    weights = torch.randn(2, 6, mc.hidden_size)
    real = mask.bool()
    initial = None
    for step in range(3):
        out = _text_states(model, ids, mask)
        initial = out.detach() if initial is None else initial
        ref = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(out[real], ref[real], rtol=1e-5, atol=1e-5)
        for p in [*model.parameters(), *theirs.parameters()]:
            p.grad = None
        (out * weights)[real].sum().backward()
        (ref * weights)[real].sum().backward()
        with torch.no_grad():
            for ours, their, n in pairs:
                torch.testing.assert_close(
                    ours.grad, their.grad.reshape(ours.shape), rtol=1e-4, atol=1e-5, msg=f"step {step}: {n}"
                )
                # A step of 0.2 at the largest entry (the same for both, given equal gradients): big enough that
                # B and the magnitudes move well away from their initial values.
                ours.sub_(0.2 * ours.grad / ours.grad.abs().max().clamp_min(1e-12))  # (A: zero gradient at step 0)
                their.sub_(0.2 * their.grad / their.grad.abs().max().clamp_min(1e-12))
    with torch.no_grad():
        moved = _text_states(model, ids, mask)
        assert not torch.allclose(moved[real], initial[real], atol=1e-3), "the steps should move the output"
        build_method(name, size=r, targets=["text_encoder"]).merge(model)
        merged = theirs.merge_and_unload()
        for path, module in merged.named_modules():
            if isinstance(module, nn.Linear):
                torch.testing.assert_close(
                    model.text_encoder.get_submodule(path).weight, module.weight, rtol=1e-5, atol=1e-5, msg=path
                )
        torch.testing.assert_close(_text_states(model, ids, mask)[real], moved[real], rtol=1e-5, atol=1e-5)
