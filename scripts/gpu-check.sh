#!/usr/bin/env bash
# One lent GPU's check of the CUDA TernaryConv kernel: build for this GPU, shared vectors, a whole
# LBRN-S on our kernel vs the CPU reference, and timings against cuDNN (fp32, TF32, fp16).
# Needs: x86, NVIDIA GPU, nvcc on PATH (or /usr/local/cuda/bin), PyTorch with CUDA, numpy. No TensorRT,
# no network. Under 8 minutes.
#   scripts/gpu-check.sh            # on the GPU machine
#   scripts/gpu-check.sh --dry-run  # anywhere with nvcc: compile for sm_87 and run the python parts
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python3}"
command -v nvcc >/dev/null || { echo "gpu-check: nvcc not found (install the CUDA toolkit)" >&2; exit 2; }
exec timeout 480 "$PYTHON" bench/gpu_check.py "$@"
