#!/usr/bin/env bash
# The GPU checks, as one prepared script for a machine with a CUDA device (a few minutes on an H100/H200):
#   1. tests/gpu: bf16 autocast follows fp32, cached beam search == recomputation on CUDA, a training run on the GPU
#      records GPU-hours and peak memory, and its resume after a SIGTERM-style stop ends where an uninterrupted run does;
#   2. benchmarks/bench_train.py, model part: mPLUG-base at 256 px, full fine-tuning and each PEFT method (each PEFT
#      method also with the visual-feature store):
#      samples/s, peak GPU memory, counted FLOPs per step and MFU;
#   3. benchmarks/bench_generation.py on CUDA: cached vs recomputed beam search (base, batch 8, 5 beams).
# Logs and JSON go to $OUT (or ./gpu_checks). Needs torch with CUDA, timm, safetensors, pytest and the package's
# other dependencies installed; the package itself is taken from src/. Exit status 1 if any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_checks}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
if ! $py -c "import torch, timm, safetensors, pytest; assert torch.cuda.is_available(), 'no CUDA device'"; then
    echo "gpu_checks: the Python environment or the GPU is missing (see above)" >&2
    exit 2
fi
$py -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
status=0
timeout 240 $py -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$out/tests.log" || status=1
timeout 300 $py benchmarks/bench_train.py --steps 0 --gpu-steps 10 --batch 64 --json "$out/bench_train.json" \
    2>&1 | tee "$out/bench_train.log" || status=1
timeout 120 $py benchmarks/bench_generation.py --device cuda 2>&1 | tee "$out/bench_generation.log" || status=1
echo "gpu_checks: exit $status"
exit $status
