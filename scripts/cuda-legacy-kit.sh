#!/usr/bin/env bash
# Build (once) a device-code compile kit for the Jetson GPUs that CUDA 13 no longer targets
# (Xavier sm_72 on JetPack 5): clang compiles our CUDA kernel to PTX against CUDA 11.8's headers,
# and CUDA 11.8's ptxas assembles it for the SM. Only a compile check: nothing links or runs.
#
#   scripts/cuda-legacy-kit.sh [DIR]    DIR defaults to $LBDEPLOY_CACHE/cuda-11.8, else <repo>/.cache/cuda-11.8
#
# Prints DIR as its last line. DIR is laid out like a CUDA install (bin/ptxas, include/, lib64/,
# nvvm/libdevice/, version.txt) so that `clang++ --cuda-path=DIR` accepts it, plus DIR/stub/ (see
# below). Idempotent: DIR/stamp records this script's hash.
#
# Sources: clang from Debian (apt-get), the headers, libdevice and ptxas from NVIDIA's PyPI wheels
# nvidia-cuda-runtime-cu11 and nvidia-cuda-nvcc-cu11 (pinned below).
# Exit codes: 0 ready; 3 a prerequisite cannot be had here (no root for apt, no network) - callers skip.
set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SCRIPT")")
DIR=${1:-${LBDEPLOY_CACHE:-$REPO/.cache}/cuda-11.8}
CLANG_PACKAGE=clang-14
WHEELS=(nvidia-cuda-runtime-cu11==11.8.89 nvidia-cuda-nvcc-cu11==11.8.89)

log() { echo "[cuda-legacy-kit] $*" >&2; }
unavailable() { log "unavailable: $*"; exit 3; }

stamp_key() { sha256sum "$SCRIPT" | cut -c1-16; }

if [ -f "$DIR/stamp" ] && [ "$(cat "$DIR/stamp")" = "$(stamp_key)" ] && command -v clang++-14 >/dev/null; then
  echo "$DIR"
  exit 0
fi

if ! command -v clang++-14 >/dev/null; then
  command -v apt-get >/dev/null || unavailable "apt-get not found; install $CLANG_PACKAGE by hand"
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || unavailable "installing $CLANG_PACKAGE needs root or passwordless sudo"
    sudo=(sudo -n)
  fi
  apt-cache show "$CLANG_PACKAGE" >/dev/null 2>&1 || "${sudo[@]}" apt-get update -q >/dev/null \
    || unavailable "apt-get update failed (no network to the Debian mirror?)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$CLANG_PACKAGE" \
    >/dev/null || unavailable "apt-get install $CLANG_PACKAGE failed"
fi

PYTHON=${PYTHON:-$(command -v python3)}
work=$(mktemp -d "${TMPDIR:-/tmp}/cuda-kit.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  -d "$work/wheels" "${WHEELS[@]}" 2>"$work/pip.log" \
  || { tail -3 "$work/pip.log" >&2; unavailable "pip download ${WHEELS[*]} failed (no network to PyPI?)"; }
for wheel in "$work"/wheels/*.whl; do
  "$PYTHON" -m zipfile -e "$wheel" "$work/unpacked"
done
runtime="$work/unpacked/nvidia/cuda_runtime"
nvcc="$work/unpacked/nvidia/cuda_nvcc"

rm -rf "$DIR.new"
mkdir -p "$DIR.new/bin" "$DIR.new/include" "$DIR.new/lib64" "$DIR.new/nvvm" "$DIR.new/stub"
cp -r "$runtime/include/." "$DIR.new/include/"
cp -rn "$nvcc/include/." "$DIR.new/include/"
cp -r "$nvcc/nvvm/libdevice" "$DIR.new/nvvm/"
cp "$nvcc/bin/ptxas" "$DIR.new/bin/ptxas"
chmod +x "$DIR.new/bin/ptxas"
echo "CUDA Version 11.8.89" > "$DIR.new/version.txt"
# clang's CUDA wrapper header includes this cuRAND header unconditionally; our kernel uses no cuRAND.
: > "$DIR.new/stub/curand_mtgp32_kernel.h"
stamp_key > "$DIR.new/stamp"
rm -rf "$DIR"
mv "$DIR.new" "$DIR"
log "ready in $DIR (clang $(clang++-14 --version | head -1 | awk '{print $NF}'), ptxas 11.8)"
echo "$DIR"
