#!/usr/bin/env bash
# Everything benchmarks/gpu.py measures, as one run on a lent GPU machine that has PyTorch and Triton (the device
# tool's H200 image has both; nothing is installed): the quick smoke run first, so a broken kernel shows in a minute,
# then the README's fp16 table, then W18s in bf16. Each part has its own time limit, so one slow part cannot take
# the others' results with it. Output: the terminal and $OUT (or benchmarks/results/) as gpu_<part>.txt.
#
#     bash benchmarks/gpu_session.sh            # about 8 minutes on an H200
set -u
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/gpu_machine.txt"
"$python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    2>&1 | tee -a "$out/gpu_machine.txt"
run() {  # run PART SECONDS ARGS...: one part under its own limit
    local part=$1 limit=$2
    shift 2
    echo "== $part: benchmarks/gpu.py $*" | tee "$out/gpu_$part.txt"
    timeout "$limit" "$python" benchmarks/gpu.py "$@" 2>&1 | tee -a "$out/gpu_$part.txt"
    echo "== $part: exit ${PIPESTATUS[0]}" | tee -a "$out/gpu_$part.txt"
}
run quick 120 --quick
run fp16 300 --repeats 5
run bf16 90 --models adpc_hrnet_w18s_seg --sizes 1024x2048 --dtype bf16 --repeats 5
