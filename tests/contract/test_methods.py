"""The contract every fine-tuning method keeps, checked on the tiny mPLUG with random weights.

One table of cases (as huggingface/peft's ``tests/test_custom_models.py``) runs through the same tests: output
shapes, which parameters train and receive gradients, zero-initialised methods leaving the model unchanged,
merge, save/load, the optimizer's view, and the closed-form parameter count. Models run in eval mode so that
outputs are deterministic. The base-size count check is marked slow.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vlpeft.methods.base import (
    METHODS,
    TARGETS,
    build_method,
    classifier_count,
    count_trainable,
    method_names,
    trainable_parameters,
)
from vlpeft.methods.full import model_count
from vlpeft.methods.registry import info
from vlpeft.model.config import preset
from vlpeft.model.generation import GenerationConfig, generate
from vlpeft.model.mplug import MPlug

VOCAB = 128  # > 102: the tiny preset keeps BERT's [CLS]=101, [SEP]=102 ids
ALL = list(TARGETS)

# (id, method name, options). Every registered method, with and without the classifier, at two sizes; the
# methods that support the visual encoder also with it as a target.
TEST_CASES: list[tuple[str, str, dict]] = [
    ("prompt-2", "prompt", {"size": 2}),
    ("prompt-8-cls", "prompt", {"size": 8, "classifier": True}),
    ("prefix-2", "prefix", {"size": 2, "reparam_hidden": 16}),
    ("prefix-8-cls", "prefix", {"size": 8, "reparam_hidden": 32, "classifier": True}),
    ("prefix-4-decoder", "prefix", {"size": 4, "reparam_hidden": 8, "targets": ["text_decoder"]}),
    ("lora-2", "lora", {"size": 2}),
    ("lora-8-cls", "lora", {"size": 8, "alpha": 4.0, "classifier": True}),
    ("lora-4-vit", "lora", {"size": 4, "targets": ALL}),
    ("lora-4-fusion", "lora", {"size": 4, "targets": ["fusion_encoder"]}),
    ("serial-4", "serial_adapter", {"size": 4}),
    ("serial-16-cls", "serial_adapter", {"size": 16, "classifier": True}),
    ("serial-8-vit-cls", "serial_adapter", {"size": 8, "targets": ALL, "classifier": True}),
    ("parallel-4", "parallel_adapter", {"size": 4}),
    ("parallel-16-cls", "parallel_adapter", {"size": 16, "classifier": True}),
    ("dora-2", "dora", {"size": 2}),
    ("dora-8-cls", "dora", {"size": 8, "alpha": 4.0, "classifier": True}),
    ("dora-4-vit", "dora", {"size": 4, "targets": ALL}),
    ("ia3", "ia3", {}),
    ("ia3-cls", "ia3", {"classifier": True}),
    ("ia3-vit-cls", "ia3", {"targets": ALL, "classifier": True}),
    ("full", "full", {}),
    ("full-cls", "full", {"classifier": True}),
]
ZERO_INIT = {"lora", "serial_adapter", "parallel_adapter", "dora", "ia3"}

cases = pytest.mark.parametrize(("name", "options"), [c[1:] for c in TEST_CASES], ids=[c[0] for c in TEST_CASES])


#: Tiny tensors: one intra-op thread (the shared fixture of tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers ----------------------------------------------------------------------------------------------------
def make_model(seed: int = 0) -> MPlug:
    torch.manual_seed(seed)
    return MPlug(preset("tiny", vocab_size=VOCAB)).eval()


def attached(name: str, options: dict, model_seed: int = 0, method_seed: int = 1):
    """A fresh tiny model (weights from ``model_seed``) with the method attached (initialised from ``method_seed``)."""
    model = make_model(model_seed)
    method = build_method(name, **options)
    torch.manual_seed(method_seed)
    method.attach(model)
    return model.eval(), method


def make_batch(seed: int = 123) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prompt_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    target_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    return {
        "images": torch.randn(2, 3, 64, 64, generator=g),
        "prompt_ids": torch.randint(5, VOCAB, (2, 5), generator=g) * prompt_mask,
        "prompt_mask": prompt_mask,
        "target_ids": torch.randint(5, VOCAB, (2, 7), generator=g) * target_mask,
        "target_mask": target_mask,
    }


BATCH = make_batch()


def run(model: MPlug, batch: dict[str, torch.Tensor] = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, decoder logits) on ``batch``."""
    loss = model(**batch)
    states, states_mask = model.encode(batch["images"], batch["prompt_ids"], batch["prompt_mask"])
    logits = model.text_decoder(batch["target_ids"], batch["target_mask"], states, states_mask)
    return loss, logits


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 7, scale: float = 0.1) -> None:
    """Move every trainable parameter away from its initialisation (zero-initialised B / W_up included)."""
    g = torch.Generator().manual_seed(seed)
    for p in trainable_parameters(model).values():
        p.add_(torch.randn(p.shape, generator=g) * scale)


def head_ids(model: MPlug) -> set[int]:
    return {id(p) for p in model.text_decoder.cls.predictions.parameters()}


def idle_ids(model: MPlug) -> set[int]:
    """Parameters no forward pass uses: the cross-attention of the connected-attention fusion layers."""
    layers = list(model.fusion_encoder.encoder)
    return {id(p) for i in model.fusion_encoder.connected for p in layers[i].crossattention.parameters()}


def other_method(name: str) -> str:
    return "serial_adapter" if name == "lora" else "lora"


# -- the table covers every method ------------------------------------------------------------------------------
def test_every_registered_method_has_cases() -> None:
    names = set(method_names())
    assert names == set(METHODS)
    assert {c[1] for c in TEST_CASES} == names
    for n in names - {"full"}:
        flags = {c[2].get("classifier", False) for c in TEST_CASES if c[1] == n}
        sizes = {c[2].get("size") for c in TEST_CASES if c[1] == n}
        assert flags == {False, True}, n
        assert len(sizes) >= min(2, len(info(n).table_sizes)), n  # (IA)^3 has one size


# -- outputs ----------------------------------------------------------------------------------------------------
@cases
def test_output_shapes_unchanged(name: str, options: dict) -> None:
    loss0, logits0 = run(make_model())
    model, _ = attached(name, options)
    loss, logits = run(model)
    assert loss.shape == loss0.shape == torch.Size([])
    assert logits.shape == logits0.shape == (2, 7, VOCAB)
    assert torch.isfinite(loss) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "options"),
    [c[1:] for c in TEST_CASES if c[1] in ZERO_INIT],
    ids=[c[0] for c in TEST_CASES if c[1] in ZERO_INIT],
)
def test_zero_initialised_methods_leave_output_unchanged(name: str, options: dict) -> None:
    loss0, logits0 = run(make_model())
    model, _ = attached(name, options)
    loss, logits = run(model)
    torch.testing.assert_close(logits, logits0, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, loss0, rtol=0, atol=1e-6)


# -- trainable parameters and gradients -------------------------------------------------------------------------
@cases
def test_only_method_parameters_require_grad(name: str, options: dict) -> None:
    model = make_model()
    base_ids = {id(p) for p in model.parameters()}
    method = build_method(name, **options)
    method.attach(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    added = {id(p) for p in model.parameters()} - base_ids
    if name == "full":
        expected = {id(p) for p in model.parameters()}
    else:
        expected = added | (head_ids(model) if method.cfg.classifier else set())
    assert trainable == expected
    assert added <= trainable, "a parameter the method added is frozen"


@cases
def test_gradients_reach_all_and_only_trainable_parameters(name: str, options: dict) -> None:
    model, _ = attached(name, options)
    loss, _ = run(model)
    loss.backward()
    idle = idle_ids(model)
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in idle:
            assert p.grad is not None, f"{n} is trainable but got no gradient"
            assert torch.isfinite(p.grad).all(), n
        else:
            # Frozen, or (full fine-tuning only) never used by any forward pass.
            assert p.grad is None, f"{n} got a gradient"
    if name != "full":
        assert not any(id(p) in idle for p in trainable_parameters(model).values())


@cases
def test_one_optimizer_step_changes_the_output(name: str, options: dict) -> None:
    model, _ = attached(name, options)
    _, before = run(model)
    opt = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-2)
    run(model)[0].backward()
    opt.step()
    with torch.no_grad():
        _, after = run(model)
    assert not torch.allclose(before, after)


@cases
def test_optimizer_sees_exactly_the_trainable_parameters(name: str, options: dict) -> None:
    model, _ = attached(name, options)
    opt = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-3, weight_decay=0.05)
    seen = [p for group in opt.param_groups for p in group["params"]]
    assert len(seen) == len({id(p) for p in seen}), "a (tied) parameter appears twice"
    assert {id(p) for p in seen} == {id(p) for p in model.parameters() if p.requires_grad}


def test_classifier_trains_the_tied_projection_once() -> None:
    model, _ = attached("lora", {"size": 2, "classifier": True})
    emb = model.text_decoder.bert.embeddings.word_embeddings.weight
    assert model.text_decoder.cls.predictions.decoder.weight is emb
    assert emb.requires_grad
    names = [n for n, p in trainable_parameters(model).items() if p is emb]
    assert len(names) == 1


# -- counts -----------------------------------------------------------------------------------------------------
@cases
def test_counted_equals_closed_form(name: str, options: dict) -> None:
    model, method = attached(name, options)
    assert count_trainable(model) == method.closed_form_count(model.config)
    if name == "prefix":
        method.merge(model)
        assert count_trainable(model) == method.merged_count(model.config)


def test_closed_form_counts_by_hand() -> None:
    """Independent arithmetic for the tiny preset (d=64, 1 text + 2 fusion (1 connected) + 2 decoder layers)."""
    mc = preset("tiny", vocab_size=VOCAB)
    d = 64
    assert build_method("prompt", size=3).closed_form_count(mc) == 3 * d
    # q and k of: 1 text self-attn, 2 fusion self-attn, 1 fusion cross-attn, 2 decoder self + 2 decoder cross.
    assert build_method("lora", size=2).closed_form_count(mc) == 8 * 2 * 2 * (d + d)
    assert build_method("serial_adapter", size=4).closed_form_count(mc) == 5 * 2 * (2 * d * 4 + 4 + d)
    assert build_method("parallel_adapter", size=4).closed_form_count(mc) == 5 * 2 * (2 * d * 4 + 4 + d)
    prefix = build_method("prefix", size=4, reparam_hidden=8)
    assert prefix.closed_form_count(mc) == 4 * d + (d * 8 + 8) + (8 * 5 * 2 * d + 5 * 2 * d)
    assert prefix.merged_count(mc) == 5 * 2 * 4 * d
    head = (d * d + d) + 2 * d + VOCAB + VOCAB * d
    assert classifier_count(mc) == head
    assert build_method("lora", size=2, classifier=True).closed_form_count(mc) == 8 * 2 * 2 * 2 * d + head
    # DoRA: LoRA's count plus one magnitude per adapted output row (16 projections of d rows).
    assert build_method("dora", size=2).closed_form_count(mc) == 8 * 2 * 2 * (d + d) + 16 * d
    # (IA)^3: l_k, l_v of the 8 running attentions; l_ff (width 2d in the tiny preset) in each of the 5 blocks.
    assert build_method("ia3").closed_form_count(mc) == 8 * 2 * d + 5 * 2 * d
    # ... and on the ViT (2 blocks of width d): l_k, l_v on the fused qkv's key and value rows, l_ff at fc2 (4d).
    assert build_method("ia3", targets=ALL).closed_form_count(mc) == 8 * 2 * d + 5 * 2 * d + 2 * (2 * d + 4 * d)


@pytest.mark.parametrize("vocab", [VOCAB, 30522])
def test_full_closed_form_equals_instantiated_count_tiny(vocab: int) -> None:
    mc = preset("tiny", vocab_size=vocab)
    assert model_count(mc) == sum(p.numel() for p in MPlug(mc).parameters())
    assert build_method("full").closed_form_count(mc) == build_method("full", classifier=True).closed_form_count(mc)


@pytest.mark.slow
def test_closed_form_equals_counted_at_base_size() -> None:
    base = MPlug(preset("base"))
    assert sum(p.numel() for p in base.parameters()) == model_count(base.config) == 346_801_722
    for name, options in [(c[1], c[2]) for c in TEST_CASES]:
        options = {k: v for k, v in options.items() if k != "reparam_hidden"}  # base keeps the default MLP width
        model = copy.deepcopy(base)
        method = build_method(name, **options)
        method.attach(model)
        assert count_trainable(model) == method.closed_form_count(model.config), (name, options)
        if name == "prefix":
            method.merge(model)
            assert count_trainable(model) == method.merged_count(model.config), (name, options)
        del model


# -- merge ------------------------------------------------------------------------------------------------------
@cases
def test_merged_equals_unmerged(name: str, options: dict) -> None:
    model, method = attached(name, options)
    perturb(model)
    with torch.no_grad():
        loss, logits = run(model)
        method.merge(model)
        loss_m, logits_m = run(model)
    torch.testing.assert_close(logits_m, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_m, loss, rtol=1e-5, atol=1e-5)


def test_lora_unmerge_restores_the_weights() -> None:
    from vlpeft.methods.lora import LoRALinear

    model, method = attached("lora", {"size": 4, "targets": ALL})
    perturb(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.merge(model)
    wrappers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert wrappers and all(m.merged for m in wrappers)
    for m in wrappers:
        m.unmerge()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, before[n], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "options"), [("dora", {"size": 4, "targets": ALL}), ("ia3", {"targets": ALL})])
def test_dora_and_ia3_unmerge_restore_the_weights(name: str, options: dict) -> None:
    from vlpeft.methods.dora import DoRALinear
    from vlpeft.methods.ia3 import IA3Linear

    model, method = attached(name, options)
    perturb(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        expected = run(model)
    method.merge(model)
    wrappers = [m for m in model.modules() if isinstance(m, (DoRALinear, IA3Linear))]
    assert wrappers and all(m.merged for m in wrappers)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all("base_layer" in n for n in changed), "merge must write into the frozen weights only"
    for m in wrappers:
        m.unmerge()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, before[n], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(run(model), expected, rtol=1e-5, atol=1e-5)


def test_ia3_has_no_size_knob() -> None:
    assert build_method("ia3").cfg.size == 1
    with pytest.raises(ValueError, match=r"size must be 1 for \(IA\)\^3"):
        build_method("ia3", size=4)


@pytest.mark.parametrize("rank", [2, 32])
def test_lora_update_is_eq_13_unless_alpha_is_given(rank: int) -> None:
    """The study's eq. 13: W_q + B A with no alpha/r factor, at every rank; Hu et al.'s alpha/r on request."""
    from vlpeft.methods.lora import LoRALinear

    torch.manual_seed(0)
    base = nn.Linear(16, 16)
    x = torch.randn(3, 16)
    for alpha, scaling in ((None, 1.0), (16.0, 16.0 / rank)):
        lora = LoRALinear(copy.deepcopy(base), rank, alpha)
        nn.init.normal_(lora.lora_B.weight)
        with torch.no_grad():
            expected = base(x) + scaling * x @ (lora.lora_B.weight @ lora.lora_A.weight).T
            torch.testing.assert_close(lora(x), expected, rtol=1e-5, atol=1e-5)
    assert build_method("lora", size=rank).record_info() == {
        "scaling": 1.0,
        "scaling_rule": "eq. 13: Phi = BA (scaling 1)",
    }
    assert build_method("lora", size=rank, alpha=16.0).record_info()["scaling"] == 16.0 / rank
    model, _ = attached("lora", {"size": rank})
    assert {m.scaling for m in model.modules() if isinstance(m, LoRALinear)} == {1.0}
    with pytest.raises(ValueError, match="alpha must be a positive number or null"):
        build_method("lora", size=rank, alpha=0.0)


# -- save / load ------------------------------------------------------------------------------------------------
@cases
def test_save_load_roundtrip(name: str, options: dict, tmp_path) -> None:
    model, method = attached(name, options)
    perturb(model)
    path = tmp_path / "weights.safetensors"
    method.save(model, path)
    with torch.no_grad():
        expected = run(model)
    # Same base weights, a different method initialisation: everything trainable must come from the file.
    fresh, fresh_method = attached(name, options, method_seed=99)
    fresh_method.load(fresh, path)
    with torch.no_grad():
        got = run(fresh)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_save_load_merged_prefix(tmp_path) -> None:
    model, method = attached("prefix", {"size": 4, "reparam_hidden": 8})
    perturb(model)
    method.merge(model)
    path = tmp_path / "prefix.safetensors"
    method.save(model, path)
    with torch.no_grad():
        expected = run(model)
    fresh, fresh_method = attached("prefix", {"size": 4, "reparam_hidden": 8}, method_seed=5)
    with pytest.raises(ValueError, match="shape|missing|unexpected"):  # an unmerged model has the MLP instead
        fresh_method.load(fresh, path)
    fresh_method.merge(fresh)
    fresh_method.load(fresh, path)
    with torch.no_grad():
        torch.testing.assert_close(run(fresh), expected, rtol=0, atol=0)


@cases
def test_load_refuses_weights_of_another_method_or_size(name: str, options: dict, tmp_path) -> None:
    model, method = attached(name, options)
    path = tmp_path / "weights.safetensors"
    method.save(model, path)

    other_name = other_method(name)
    other_options = {k: v for k, v in options.items() if k in ("classifier", "targets")}
    if other_name != "serial_adapter" and other_options.get("targets"):
        other_options["targets"] = [t for t in other_options["targets"] if t != "visual_encoder"]
    other_model, other = attached(other_name, other_options)
    with pytest.raises(ValueError, match="holds weights for method"):
        other.load(other_model, path)

    if len(info(name).table_sizes) == 1:
        return  # no other size to load into
    resized = {**options, "size": 2 * options.get("size", 8)}
    resized_model, resized_method = attached(name, resized)
    with pytest.raises(ValueError, match="holds weights for method"):
        resized_method.load(resized_model, path)


# -- the frozen visual encoder ----------------------------------------------------------------------------------
@cases
def test_frozen_visual_encoder_builds_no_graph(name: str, options: dict) -> None:
    model, _ = attached(name, options)
    vit_trains = name == "full" or "visual_encoder" in options.get("targets", ())
    assert any(p.requires_grad for p in model.visual_encoder.parameters()) == vit_trains
    assert torch.is_grad_enabled()
    assert model.encode_image(BATCH["images"]).requires_grad == vit_trains


# -- generation -------------------------------------------------------------------------------------------------
@cases
def test_cached_generation_equals_uncached(name: str, options: dict) -> None:
    """Prefix keys sit outside the key/value cache and LoRA enters the cached projections: the cache must agree."""
    model, _ = attached(name, options)
    perturb(model)
    args = (BATCH["images"], BATCH["prompt_ids"], BATCH["prompt_mask"])
    cfg = {"num_beams": 2, "min_new_tokens": 3, "max_new_tokens": 5}
    cached = generate(model, *args, GenerationConfig(use_cache=True, **cfg))
    uncached = generate(model, *args, GenerationConfig(use_cache=False, **cfg))
    assert cached == uncached


# -- bad input --------------------------------------------------------------------------------------------------
def test_unknown_method_name() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'bitfit'; known: \["):
        build_method("bitfit")


@pytest.mark.parametrize("name", sorted({c[1] for c in TEST_CASES}))
@pytest.mark.parametrize("size", [0, -4, 2.5, True])
def test_bad_size(name: str, size: object) -> None:
    with pytest.raises(ValueError, match="size must be a positive integer"):
        build_method(name, size=size)


@pytest.mark.parametrize("name", sorted({c[1] for c in TEST_CASES}))
def test_unknown_target(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown target module\(s\) \['vision_tower'\]"):
        build_method(name, targets=["text_decoder", "vision_tower"])


def test_empty_targets() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_method("lora", targets=[])


@pytest.mark.parametrize("name", ["prompt", "prefix", "parallel_adapter"])
def test_unsupported_target(name: str) -> None:
    with pytest.raises(ValueError, match=rf"method '{name}' does not support target\(s\) \['visual_encoder'\]"):
        build_method(name, targets=ALL)


def test_unknown_option() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['rank'\] for method 'lora'"):
        build_method("lora", rank=8)
    with pytest.raises(ValueError, match="reparam_hidden must be positive"):
        build_method("prefix", reparam_hidden=0)


def test_prompt_needs_the_text_encoder() -> None:
    method = build_method("prompt", targets=["text_decoder"])
    with pytest.raises(ValueError, match="targets must include text_encoder"):
        method.attach(make_model())


# -- prefix-tuning specifics ------------------------------------------------------------------------------------
def test_prefix_model_deep_copies_into_an_independent_model() -> None:
    """The cache-reset hooks must follow a deep copy (they reset the original's encoder otherwise) and no
    autograd graph may stay cached between passes (deepcopy refuses non-leaf tensors)."""
    model, _ = attached("prefix", {"size": 4, "reparam_hidden": 8})
    run(model)[0].backward()
    clone = copy.deepcopy(model)
    with torch.no_grad():
        before = run(clone)[1]
        for p in clone.prefix_encoder.parameters():
            p.add_(1.0)
        after = run(clone)[1]
        original = run(model)[1]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(original, before, rtol=0, atol=0)


# -- the parameter table (paper's Table II) ---------------------------------------------------------------------
def test_parameter_table_base() -> None:
    from vlpeft.methods.table import TABLE_II_SIZES, parameter_table

    rows = parameter_table("base")
    assert len(rows) == 2 * sum(len(v) for v in TABLE_II_SIZES.values()) + 1
    full = rows[-1]
    assert full["method"] == "full" and full["trainable"] == 346_801_722 and full["percent"] == 100.0
    by_key = {(r["method"], r["size"], r["classifier"]): r for r in rows}
    mc = preset("base")
    d, v = 768, 30522
    # 82 adapted projections: q, k of 24 self-attentions and of 17 cross-attentions (not the connected layer's).
    assert by_key[("lora", 8, False)]["trainable"] == 82 * 8 * 2 * d == 1_007_616
    # Beyond the paper. DoRA: LoRA's plus a magnitude per output row of the 82 projections. (IA)^3: l_k and l_v of
    # the 41 running attentions, l_ff (3072) in each of the 24 blocks; its one size, 1.
    assert by_key[("dora", 8, False)]["trainable"] == 1_007_616 + 82 * d == 1_070_592
    assert by_key[("ia3", 1, False)]["trainable"] == 41 * 2 * d + 24 * 3072 == 136_704
    assert {s for (n, s, _c) in by_key if n == "ia3"} == {1}
    assert by_key[("prompt", 16, False)]["trainable"] == 16 * d
    head = classifier_count(mc)
    assert head == (d * d + d) + 2 * d + v + v * d
    assert by_key[("prompt", 16, True)]["trainable"] == 16 * d + head
    for (name, size, cls), row in by_key.items():
        assert row["percent"] == pytest.approx(100 * row["trainable"] / 346_801_722)
        if name == "prefix":
            assert row["merged"] == 24 * 2 * size * d + (head if cls else 0)
            assert row["merged_percent"] == pytest.approx(100 * row["merged"] / 346_801_722)
        elif name != "full":
            assert row["merged"] is None
            method = build_method(name, size=size, classifier=cls)
            assert row["trainable"] == method.closed_form_count(mc)


def test_parameter_table_cli(capsys) -> None:
    from vlpeft.methods.table import main, parameter_table

    assert main(["--preset", "tiny", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "method,size,classifier,trainable,percent,merged,merged_percent"
    assert len(lines) == 1 + len(parameter_table("tiny"))
    assert lines[1].startswith("prompt,2,False,128,")
    assert main(["--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "346,801,722" in out and "| lora | 8 | False | 1,007,616 |" in out
    with pytest.raises(SystemExit):
        main(["--format", "xlsx"])
