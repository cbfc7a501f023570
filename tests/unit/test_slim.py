"""The slim checkpoint: converted once from the official layout, memory-mapped by every run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from vlpeft.methods.base import build_method, trainable_parameters
from vlpeft.model.checkpoint import CheckpointError, load_official
from vlpeft.model.config import preset
from vlpeft.model.mplug import MPlug
from vlpeft.model.slim import (
    TIED,
    convert,
    load_mapped,
    map_safetensors,
    read_metadata,
    save_weights,
    tensor_digest,
)
from vlpeft.testing import make_synthetic_official_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = preset("tiny", vocab_size=128, fusion_layer_offset=2)


def _inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=g),
        torch.randint(1, cfg.vocab_size, (2, 5), generator=g),
        torch.ones(2, 5, dtype=torch.long),
        torch.randint(1, cfg.vocab_size, (2, 6), generator=g),
        torch.ones(2, 6, dtype=torch.long),
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_saved_weights_map_back_exactly_and_stay_tied(tmp_path: Path):
    torch.manual_seed(0)
    model = MPlug(TINY).eval()
    save_weights(model, tmp_path / "w.safetensors")
    mapped = load_mapped(TINY, tmp_path / "w.safetensors").eval()
    a, b = model.state_dict(), mapped.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        mapped.text_decoder.cls.predictions.decoder.weight
        is mapped.text_decoder.bert.embeddings.word_embeddings.weight
    )
    assert not any(p.is_meta for p in mapped.parameters())
    torch.testing.assert_close(model(*_inputs(TINY)), mapped(*_inputs(TINY)), rtol=0, atol=0)
    meta = read_metadata(tmp_path / "w.safetensors")
    assert meta["visual_digest"] == tensor_digest(a)
    assert TIED not in map_safetensors(tmp_path / "w.safetensors")


def test_training_a_mapped_model_never_writes_the_file(tmp_path: Path):
    torch.manual_seed(0)
    save_weights(MPlug(TINY), tmp_path / "w.safetensors")
    before = _sha(tmp_path / "w.safetensors")
    model = load_mapped(TINY, tmp_path / "w.safetensors")
    build_method("full").attach(model)
    opt = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-2)
    start = model.text_encoder.embeddings.word_embeddings.weight.detach().clone()
    model(*_inputs(TINY)).backward()
    opt.step()
    assert not torch.equal(start, model.text_encoder.embeddings.word_embeddings.weight)  # trained in memory
    assert _sha(tmp_path / "w.safetensors") == before  # copy-on-write: the file is untouched
    again = load_mapped(TINY, tmp_path / "w.safetensors")
    assert torch.equal(again.text_encoder.embeddings.word_embeddings.weight, start)


def test_convert_equals_the_checking_loader_and_keeps_its_report(tmp_path: Path):
    sd = make_synthetic_official_checkpoint(TINY, queue_size=16)
    torch.save({"model": sd}, tmp_path / "mplug.pth")
    summary = convert(tmp_path / "mplug.pth", tmp_path / "slim.safetensors", TINY)
    reference = MPlug(TINY).eval()
    report = load_official(reference, sd)
    slim = load_mapped(TINY, tmp_path / "slim.safetensors").eval()
    a, b = reference.state_dict(), slim.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # exactly the model's tensors: nothing the model does not use is carried over
    assert set(map_safetensors(tmp_path / "slim.safetensors")) == set(a) - {TIED}
    text = (tmp_path / "slim.safetensors.report.txt").read_text()
    assert summary.splitlines()[0] in text
    assert f"ignored {len(report.ignored)}" in text
    assert "visual_encoder_m.visual.conv1.weight: momentum copy (pre-training distillation)" in text
    assert sum(1 for line in text.splitlines() if line.startswith("  ") and ": " in line) >= len(report.ignored)
    meta = read_metadata(tmp_path / "slim.safetensors")
    assert meta["source_sha256"] == _sha(tmp_path / "mplug.pth")
    assert meta["visual_digest"] == tensor_digest(a)


def test_convert_refuses_a_checkpoint_that_lacks_a_needed_tensor(tmp_path: Path):
    sd = make_synthetic_official_checkpoint(TINY, queue_size=16)
    del sd["text_decoder.bert.encoder.layer.1.crossattention.self.key.weight"]
    torch.save({"model": sd}, tmp_path / "mplug.pth")
    with pytest.raises(CheckpointError, match="crossattention.self.key.weight"):
        convert(tmp_path / "mplug.pth", tmp_path / "slim.safetensors", TINY)
    assert not (tmp_path / "slim.safetensors").exists()


def test_mapped_load_refuses_weights_of_another_size(tmp_path: Path):
    save_weights(MPlug(TINY), tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="shapes"):
        load_mapped(preset("tiny", vocab_size=130, fusion_layer_offset=2), tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="missing"):
        load_mapped(preset("tiny", vocab_size=128), tmp_path / "w.safetensors")  # fusion layers 0-1, not 2-3
    with pytest.raises(FileNotFoundError):
        load_mapped(TINY, tmp_path / "none.safetensors")


def test_the_meta_model_has_the_real_models_tensors_and_draws_no_random_numbers():
    from vlpeft.model.mplug import meta_model

    state = torch.random.get_rng_state()
    meta = meta_model(TINY)
    assert torch.equal(torch.random.get_rng_state(), state)
    real = MPlug(TINY)
    assert {k: (v.shape, v.dtype) for k, v in meta.state_dict().items()} == {
        k: (v.shape, v.dtype) for k, v in real.state_dict().items()
    }
    assert all(t.is_meta for t in meta.state_dict().values())
    # The mode is gone afterwards: initialising a real tensor still draws.
    torch.nn.init.normal_(torch.empty(3))
    assert not torch.equal(torch.random.get_rng_state(), state)


def test_loading_mapped_weights_does_not_import_dynamo(tmp_path: Path):
    """Random initialisation on the meta device would import torch._dynamo (1.5 s a process) for nothing."""
    import subprocess
    import sys

    path = tmp_path / "w.safetensors"
    save_weights(MPlug(TINY), path)
    code = (
        "import sys; from vlpeft.model.config import preset; from vlpeft.model.slim import load_mapped; "
        f"load_mapped(preset('tiny', vocab_size=128, fusion_layer_offset=2), {str(path)!r}); "
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_written_safetensors_read_back_with_safetensors_and_the_same_bytes_in_another_process(tmp_path: Path):
    """One file for the same tensors and metadata, whichever process writes it (safetensors' own writer orders the
    metadata by a randomly seeded hash map), readable by safetensors and by the memory map alike."""
    import subprocess
    import sys

    from safetensors import safe_open

    code = """
import torch
from vlpeft.model.slim import write_safetensors
g = torch.Generator().manual_seed(0)
tensors = {
    "b.weight": torch.randn(3, 5, generator=g),
    "a.half": torch.randn(7, generator=g).to(torch.bfloat16),
    "c.index": torch.arange(4, dtype=torch.int64),
    "d.mask": torch.tensor([True, False, True]),
    "e.scalar": torch.tensor(2.5),
    "f.empty": torch.zeros(0, 3),
}
meta = {k: k.upper() * 3 for k in ("zeta", "alpha", "mu", "beta", "omega", "kappa")}
write_safetensors(tensors, OUT, meta)
"""
    here, there = tmp_path / "here.safetensors", tmp_path / "there.safetensors"
    namespace: dict = {"OUT": str(here)}
    exec(code, namespace)
    subprocess.run([sys.executable, "-c", f"OUT = {str(there)!r}\n{code}"], check=True)
    assert here.read_bytes() == there.read_bytes()
    tensors, meta = namespace["tensors"], namespace["meta"]
    with safe_open(str(here), framework="pt") as f:
        assert f.metadata() == meta
        read = {k: f.get_tensor(k) for k in f.keys()}
    mapped = map_safetensors(here)
    assert read.keys() == mapped.keys() == tensors.keys()
    for k, t in tensors.items():
        assert read[k].dtype == mapped[k].dtype == t.dtype and torch.equal(read[k], t) and torch.equal(mapped[k], t)
    assert read_metadata(here) == meta
