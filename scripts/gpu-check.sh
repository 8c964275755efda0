#!/usr/bin/env bash
# One lent GPU's check of the CUDA TernaryConv kernel, the TensorRT plugin's enqueue and the TVM CUDA
# module (bench/gpu_check.py has the details). Two steps, because the GPU machine has no network, no
# ONNX Runtime, no TVM and no TensorRT:
#   scripts/gpu-check.sh --prepare   # here, with the project's venv: ORT references, TVM PTX, TensorRT
#                                    # headers -> .cache/gpu-check (carry it to the GPU machine)
#   scripts/gpu-check.sh             # on the GPU machine (nvcc, PyTorch with CUDA, numpy, cmake, g++):
#                                    # writes .cache/gpu-check/report.json (--json PATH); under 8 minutes
#   scripts/gpu-check.sh --dry-run   # anywhere with nvcc: prepare and rehearse every step on the CPU
# The dense reference convs run with TF32 off; timings are CUDA graph replays (launch overhead amortized),
# cuDNN in float32, TF32 and float16 NCHW and NHWC.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python3}"
command -v nvcc >/dev/null || { echo "gpu-check: nvcc not found (install the CUDA toolkit)" >&2; exit 2; }
exec timeout 480 "$PYTHON" bench/gpu_check.py "$@"
