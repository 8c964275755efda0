#!/usr/bin/env bash
# Build libternary_trt.so (the TernaryConv TensorRT plugin) with CMake and copy it to OUT_DIR.
#
# Usage: build.sh [CUDA_ARCH] [OUT_DIR]
#   CUDA_ARCH  SM number without "sm_": 87 (Orin, default), 90, ..., or "native" (CMake >= 3.24).
#   OUT_DIR    where libternary_trt.so goes (default: this folder).
# Environment: TENSORRT_ROOT (TensorRT prefix when it is not in /usr), CUDACXX (nvcc path; defaults to
# /usr/local/cuda/bin/nvcc when that exists), BUILD_DIR (default: a temporary folder).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
arch=${1:-87}
out_dir=${2:-$here}

if [[ -z ${CUDACXX:-} && -x /usr/local/cuda/bin/nvcc ]]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
command -v cmake >/dev/null || { echo "build.sh: cmake not found (apt install cmake)" >&2; exit 1; }

build_dir=${BUILD_DIR:-$(mktemp -d)}
cmake -S "$here" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  ${TENSORRT_ROOT:+-DTENSORRT_ROOT="$TENSORRT_ROOT"} >&2
cmake --build "$build_dir" -j "$(nproc)" >&2
mkdir -p "$out_dir"
cp "$build_dir/libternary_trt.so" "$out_dir/libternary_trt.so"
[[ -n ${BUILD_DIR:-} ]] || rm -rf "$build_dir"
echo "$out_dir/libternary_trt.so"
