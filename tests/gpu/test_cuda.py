"""CUDA correctness checks (marked ``gpu``; skipped without a CUDA device, run by ``benchmarks/gpu_checks.sh``).

What the CPU suite cannot show: bf16 autocast follows the fp32 loss and gradients, the key/value cache matches
recomputation with CUDA kernels, and a training run on the GPU (device and CUDA RNG state in its checkpoint)
resumes to the same end as an uninterrupted one and records GPU-hours and peak GPU memory.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from vlpeft.methods.base import build_method, trainable_parameters
from vlpeft.model.config import preset
from vlpeft.model.generation import GenerationConfig, generate
from vlpeft.model.mplug import MPlug
from vlpeft.runconfig import RunConfig
from vlpeft.train import Trainer

from ..conftest import make_run_config, signal_after

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CFG = preset("tiny", vocab_size=128)
NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "vision_attention_dropout": 0.0}


def _batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, CFG.image_size, CFG.image_size, generator=g)
    prompt = torch.randint(5, CFG.vocab_size, (n, 6), generator=g)
    target = torch.randint(5, CFG.vocab_size, (n, 9), generator=g)
    return images, prompt, torch.ones_like(prompt), target, torch.ones_like(target)


def test_bf16_autocast_follows_fp32():
    torch.manual_seed(0)
    model = MPlug(preset("tiny", vocab_size=128, **NO_DROPOUT))
    build_method("lora", size=4).attach(model)
    with torch.no_grad():  # non-zero B, so every LoRA weight has a gradient
        for p in trainable_parameters(model).values():
            p.normal_(0.0, 0.02)
    batch = _batch()
    model.train()
    loss32 = model(*batch)
    loss32.backward()
    grads32 = {k: p.grad.clone() for k, p in trainable_parameters(model).items()}
    model.zero_grad(set_to_none=True)

    model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss16 = model(*(t.cuda() for t in batch))
    loss16.backward()
    assert loss16.dtype == torch.float32  # the cross-entropy runs in fp32
    assert loss16.item() == pytest.approx(loss32.item(), rel=2e-2)
    g32 = torch.cat([g.flatten() for g in grads32.values()])
    g16 = torch.cat([p.grad.flatten().cpu() for p in trainable_parameters(model).values()])
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_beam_search_equals_recompute_on_cuda(num_beams):
    torch.manual_seed(1)
    model = MPlug(CFG).eval().cuda()
    images, prompt, mask, _, _ = _batch(3, seed=1)
    outs = [generate(model, images.cuda(), prompt.cuda(), mask.cuda(),
                     GenerationConfig(num_beams=num_beams, min_new_tokens=1, max_new_tokens=8, use_cache=c))
            for c in (True, False)]
    assert outs[0] == outs[1]


def test_training_run_on_cuda_records_gpu_use(tiny_study, tmp_path):
    cfg = make_run_config(tiny_study, tmp_path / "run", task="vqa", device="cuda")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from vlpeft.train import main

    assert main(["--config", str(path)]) == 0
    rec = json.loads((tmp_path / "run/record.json").read_text())
    assert rec["status"] == "success"
    assert rec["gpu_hours"] > 0
    assert rec["peak_gpu_memory_bytes"] > 0
    assert rec["environment"]["gpu"]["name"]
    assert [p["step"] for p in rec["curve"]] == [3, 6]


def test_resume_on_cuda_equals_uninterrupted(tiny_study, tmp_path):
    over = {"task": "vqa", "device": "cuda", "model_overrides": NO_DROPOUT}

    def trainer(sub: str) -> Trainer:
        t = Trainer(RunConfig.from_dict(make_run_config(tiny_study, tmp_path / sub, **over)))
        t.setup()
        return t

    full = trainer("full")
    assert full.run() == "success"
    first = trainer("cut")
    signal_after(first, 4)
    assert first.run() == "preempted"
    second = trainer("cut")
    assert second.run() == "success"
    a, b = trainable_parameters(full.model), trainable_parameters(second.model)
    for k in a:  # bf16 kernels are not bit-deterministic run to run: close, not equal
        torch.testing.assert_close(a[k], b[k], atol=2e-3, rtol=2e-2)
    assert [p["step"] for p in full.curve] == [p["step"] for p in second.curve] == [3, 6]
