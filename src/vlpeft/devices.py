"""Which device a run computes on, and a refusal (not a silent CPU fallback) when the GPUs it asks for are missing."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("vlpeft.devices")


def require_cuda(processes: int) -> None:
    """Raise unless torch sees a CUDA device for each of this node's ``processes``; the error says what it sees."""
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if seen < processes:
        raise RuntimeError(
            f"device: cuda, but torch sees {seen} CUDA device(s) for {processes} process(es) on this node "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}, torch {torch.__version__} "
            f"built for CUDA {torch.version.cuda or 'none'}): check the job's GPU request (--gpus) and the driver "
            "(nvidia-smi), or set train.device to cpu or auto to run on the CPU"
        )


def pick(device: str, processes: int = 1) -> str:
    """``cuda`` or ``cpu`` for the config's ``device`` (auto, cpu, cuda): cuda is checked, auto says where it lands."""
    if device == "cuda":
        require_cuda(processes)
        return "cuda"
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        log.warning(
            "device: auto and torch sees no CUDA device (CUDA_VISIBLE_DEVICES=%s): running on the CPU",
            os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        )
    return "cpu"
