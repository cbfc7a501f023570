#!/usr/bin/env bash
# The GPU checks, as one prepared script for a machine with a CUDA device (a few minutes on an H100/H200):
#   1. tests/gpu: bf16 autocast follows fp32, cached beam search == recomputation on CUDA, a training run on the GPU
#      records GPU-hours and peak memory, and its resume after a SIGTERM-style stop ends where an uninterrupted run does;
#   2. nccl (two or more GPUs; skipped, saying so, on one): two ranks over NCCL under vlpeft.launch, process group bound
#      to each GPU, rank 0 busy alone longer than the collective timeout, then a SIGTERM: exit 75 and a checkpoint;
#   3. benchmarks/bench_train.py, model part: mPLUG-base at 256 px, full fine-tuning and each PEFT method (each PEFT
#      method also with the visual-feature store): samples/s, peak GPU memory, counted FLOPs per step and MFU;
#   4. benchmarks/bench_train.py --end-to-end: mPLUG-base at 256 px, LoRA, micro-batch 64, trained by the Trainer from
#      records and the image cache on disk with 0, 2 and the config's loader workers: samples/s, data-wait fraction;
#   5. benchmarks/bench_generation.py on CUDA: cached vs recomputed beam search (base, batch 8, 5 beams), fp32 and bf16.
# Every step runs under `timeout -k 30`: the trainer treats SIGTERM as "checkpoint and stop at the next step", so a
# hung step is killed 30 s after its time is up. A summary table (step, status, seconds) ends the output.
# Logs and JSON go to $OUT (or ./gpu_checks). Needs torch with CUDA, safetensors, pytest and the package's other
# dependencies installed; the package itself is taken from src/. Exit status 1 if any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_checks}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
if ! $py -c "import torch, safetensors, pytest; assert torch.cuda.is_available(), 'no CUDA device'"; then
    echo "gpu_checks: the Python environment or the GPU is missing (see above)" >&2
    exit 2
fi
$py -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0))" \
    | tee "$out/device.txt"
gpus=$($py -c "import torch; print(torch.cuda.device_count())")
status=0
summary=()

# step NAME SECONDS COMMAND...: run COMMAND under timeout (SIGKILL 30 s after SIGTERM), log to $out/NAME.log
step() {
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$SECONDS
    timeout -k 30 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf '%-18s %-10s %6d s' "$name" ok $((SECONDS - t0)))")
    else
        [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && rc="$rc (timed out)"
        summary+=("$(printf '%-18s %-10s %6d s  exit %s' "$name" FAILED $((SECONDS - t0)) "$rc")")
        status=1
    fi
}

step tests 300 $py -m pytest -q -p no:cacheprovider -m gpu tests/gpu -k "not nccl"
if [ "$gpus" -ge 2 ]; then
    step nccl 600 $py -m pytest -q -p no:cacheprovider -m gpu tests/gpu -k nccl
else
    echo "gpu_checks: nccl skipped: the 2-process NCCL check needs two GPUs, this machine has $gpus"
    summary+=("$(printf '%-18s %-10s %6s    %s' nccl skipped - "one GPU: needs two")")
fi
step bench_train 300 $py benchmarks/bench_train.py --steps 0 --gpu-steps 10 --batch 64 --json "$out/bench_train.json"
step bench_train_e2e 300 $py benchmarks/bench_train.py --end-to-end --steps 30 --json "$out/bench_train_e2e.json"
step bench_generation 240 $py benchmarks/bench_generation.py --device cuda --bf16

echo
echo "gpu_checks summary ($(cat "$out/device.txt"))"
printf '%-18s %-10s %8s\n' step status time
for line in "${summary[@]}"; do echo "$line"; done
echo "gpu_checks: exit $status"
exit $status
