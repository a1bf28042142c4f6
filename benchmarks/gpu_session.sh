#!/usr/bin/env bash
# One run on a lent GPU machine that has PyTorch and Triton (the device tool's H200 image has both; nothing is
# installed): tools/gpu_checks.py first (compiled kernels against the emulation, no host syncs, the node's device
# paths), then benchmarks/gpu.py's fp16 tables for the README (W18s, then W48; 4x4 and 8x8 tiles), then W18s in
# bf16. Each part has its own time limit (together 9 minutes, under the device tool's 10 per command) and prints
# each model and size as it finishes, so one slow part (Triton compiling its kernels, say) cannot take the others'
# results with it. Output: the terminal and $OUT (or benchmarks/results/) as gpu_<part>.txt.
#
#     bash benchmarks/gpu_session.sh
set -u
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export ANYTIME_SPARSE_EXT=0  # the CPU backend's C++ extension would compile on first use: minutes of nothing here
python="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/gpu_machine.txt"
"$python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    2>&1 | tee -a "$out/gpu_machine.txt"
run() {  # run PART SECONDS SCRIPT ARGS...: one part under its own limit
    local part=$1 limit=$2
    shift 2
    echo "== $part: $*" | tee "$out/gpu_$part.txt"
    timeout "$limit" "$python" "$@" 2>&1 | tee -a "$out/gpu_$part.txt"
    echo "== $part: exit ${PIPESTATUS[0]}" | tee -a "$out/gpu_$part.txt"
}
run checks 150 tools/gpu_checks.py
run fp16_w18s 130 benchmarks/gpu.py --models adpc_hrnet_w18s_seg --repeats 5 --tile-edges 4 8
run fp16_w48 200 benchmarks/gpu.py --models adpc_hrnet_w48_seg --repeats 5 --tile-edges 4 8
run bf16 70 benchmarks/gpu.py --models adpc_hrnet_w18s_seg --sizes 1024x2048 --dtype bf16 --repeats 5
