#!/usr/bin/env bash
# Build libternary_trt.so (the TernaryConv TensorRT plugin) with CMake and copy it to OUT_DIR.
#
# Usage: build.sh [CUDA_ARCH] [OUT_DIR]
#   CUDA_ARCH  SM number without "sm_": 87 (Orin, default), 90, ..., or "native": CMake >= 3.24 asks the
#              GPU; with an older CMake (JetPack 6 has 3.22) a Jetson's SoC gives it (Orin 87, Xavier 72).
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

if [[ $arch == native ]]; then
  cmake_version=$(cmake --version | awk 'NR == 1 {print $3}')
  if ! printf '3.24\n%s\n' "$cmake_version" | sort -V -C; then
    case "$(tr -d '\0' < /proc/device-tree/compatible 2>/dev/null || true)" in
      *tegra234*) arch=87 ;;  # Jetson Orin
      *tegra194*) arch=72 ;;  # Jetson Xavier
      *) echo "build.sh: CUDA_ARCH=native needs CMake >= 3.24 (this one is $cmake_version); pass the SM number, e.g. 87 for Orin" >&2
         exit 1 ;;
    esac
    echo "build.sh: CMake $cmake_version does not know 'native'; this Jetson is sm_$arch" >&2
  fi
fi

build_dir=${BUILD_DIR:-$(mktemp -d)}
cmake -S "$here" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  ${TENSORRT_ROOT:+-DTENSORRT_ROOT="$TENSORRT_ROOT"} >&2
cmake --build "$build_dir" -j "$(nproc)" >&2
mkdir -p "$out_dir"
cp "$build_dir/libternary_trt.so" "$out_dir/libternary_trt.so"
[[ -n ${BUILD_DIR:-} ]] || rm -rf "$build_dir"
echo "$out_dir/libternary_trt.so"
