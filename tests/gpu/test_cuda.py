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
    outs = [
        generate(
            model,
            images.cuda(),
            prompt.cuda(),
            mask.cuda(),
            GenerationConfig(num_beams=num_beams, min_new_tokens=1, max_new_tokens=8, use_cache=c),
        )
        for c in (True, False)
    ]
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


# Rank 0 made slow where it works alone (scoring, writing a checkpoint): installed in the ranks by sitecustomize.
_SLOW_RANK0 = """
import os
if os.environ.get("RANK") == "0" and os.environ.get("SLOW_RANK0_S"):
    import time
    import torch
    from vlpeft import evaluate
    delay = float(os.environ["SLOW_RANK0_S"])
    _score, _save = evaluate.Evaluator.score, torch.save
    def _slow_score(self, preds, *args):
        time.sleep(delay)
        return _score(self, preds, *args)
    def _slow_save(*a, **k):
        time.sleep(delay)
        return _save(*a, **k)
    evaluate.Evaluator.score, torch.save = _slow_score, _slow_save
"""


@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason=f"the 2-process NCCL check needs two GPUs ({torch.cuda.device_count()} here)"
)
def test_two_nccl_ranks_train_wait_for_rank0_and_exit_75_when_preempted(tiny_study, tmp_path):
    """Two ranks over NCCL under vlpeft.launch (the rule's command): the process group is bound to each rank's GPU
    and has a 6 s timeout, rank 0 scores and checkpoints 15 s at a time alone, and nothing is killed by NCCL's
    watchdog; the record says 2 processes on CUDA. Then a SIGTERM to the whole job mid-run: exit 75 and a checkpoint
    holding both ranks' CUDA RNG states."""
    import os
    import signal
    import subprocess
    import sys
    import time

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SLOW_RANK0)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }

    def launch(run: str, steps: int, slow: str) -> tuple[subprocess.Popen, object]:
        cfg = make_run_config(
            tiny_study,
            tmp_path / run,
            task="vqa",
            device="cuda",
            per_device_batch_size=2,
            dist_timeout_min=0.1,
            rank0_timeout_min=5.0,
            schedule={"kind": "steps", "steps": steps, "warmup_steps": 2},
            eval={"interval": 3, "splits": ["val"], "num_beams": 1, "max_new_tokens": 2},
        )
        path = tmp_path / f"{run}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log = open(tmp_path / f"{run}.log", "w")  # noqa: SIM115 (closed by the caller)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vlpeft.launch",
                "--nproc-per-node",
                "2",
                "--stop-grace",
                "120",
                "--config",
                str(path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, "SLOW_RANK0_S": slow},
            start_new_session=True,
        )
        return proc, log

    proc, log = launch("slow", 6, "15")
    rc = proc.wait(timeout=400)
    log.close()
    assert rc == 0, (tmp_path / "slow.log").read_text()[-4000:]
    rec = json.loads((tmp_path / "slow/record.json").read_text())
    assert rec["world_size"] == 2 and rec["gpu_hours"] > 0 and [p["step"] for p in rec["curve"]] == [3, 6]

    proc, log = launch("cut", 100000, "")
    deadline = time.time() + 300
    while "step 5/" not in (tmp_path / "cut.log").read_text():
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "cut.log").read_text()[-4000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    rc = proc.wait(timeout=300)
    log.close()
    assert rc == 75, (tmp_path / "cut.log").read_text()[-4000:]
    state = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)
    assert state["device_type"] == "cuda" and len(state["rng"]) == 2
    assert all(r["cuda"] is not None for r in state["rng"])
