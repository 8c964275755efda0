#!/usr/bin/env bash
# Build (once) the emulated ARM lane: an aarch64 CPython 3.11 with numpy, onnxruntime and apache-tvm
# that runs on an x86-64 Debian host under qemu-user. Tests and the CI use it to run our aarch64 kernel
# library and exported artifacts the way a Raspberry Pi / Jetson CPU would (see docs/arm-lane.md).
#
#   scripts/arm-lane.sh [DIR]      DIR defaults to $LBDEPLOY_CACHE/arm-lane, else <repo>/.cache/arm-lane
#
# Prints the path of the wrapper DIR/arm-python (use it like `python`) as its last line.
# Idempotent: DIR/stamp records a key made of this script's hash and the wheel pins; when it matches
# and the host tools are present, the script only prints the wrapper path. Downloads (debs, wheels)
# are kept in DIR and reused when the key changes. The host's dpkg and apt configuration are not
# changed except for installing the host packages below.
#
# Exit codes: 0 built or already built; 3 a prerequisite cannot be had here (no root/sudo for apt,
# no apt-get, package not installable) - callers skip; anything else is a build failure.
#
# To add an aarch64 wheel, append it (pinned, equal to constraints.txt / the dev venv) to ARM_WHEELS;
# to add a shared library the interpreter or a wheel needs, append its Debian package to ARM_DEBS.
set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SCRIPT")")
DIR=${1:-${LBDEPLOY_CACHE:-$REPO/.cache}/arm-lane}

HOST_PACKAGES=(qemu-user-static g++-aarch64-linux-gnu libc6-dev-arm64-cross)
ARM_PYTHON_VERSION=3.11
ARM_WHEELS=(
  numpy==2.4.6
  onnxruntime==1.32.0
  apache-tvm==0.27.0.post1
  apache-tvm-ffi==0.1.15.post2
  ml_dtypes==0.6.0
  typing_extensions==4.16.0
  flatbuffers==25.12.19
  protobuf==7.36.2
  packaging==26.4
  pillow==13.0.0
  click==8.5.1
  tqdm==4.70.1
)
# Runtime libraries of Debian's python3.11 and of the wheels (unpacked, never dpkg-installed).
ARM_DEBS=(
  libc6 libgcc-s1 gcc-12-base libstdc++6 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0
  libcrypt1 libdb5.3 liblzma5 libncursesw6 libtinfo6 libnsl2 libtirpc3 libtirpc-common
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 libreadline8
  libsqlite3-0 libuuid1 media-types
  "python$ARM_PYTHON_VERSION-minimal" "libpython$ARM_PYTHON_VERSION-minimal" "libpython$ARM_PYTHON_VERSION-stdlib"
)

log() { printf '[arm-lane] %s\n' "$*" >&2; }
unavailable() { log "unavailable: $*"; exit 3; }
timed() {  # timed LABEL CMD...: run CMD, log how long it took
  local label=$1 start=$SECONDS; shift
  "$@"
  log "$label done in $((SECONDS - start)) s"
}

stamp_key() {
  { sha256sum "$SCRIPT" | cut -d' ' -f1; printf '%s\n' "${ARM_WHEELS[@]}"; } | sha256sum | cut -d' ' -f1
}

host_tools_present() {
  command -v qemu-aarch64-static >/dev/null && command -v aarch64-linux-gnu-g++ >/dev/null
}

lane_is_current() {
  [ -x "$DIR/arm-python" ] && [ -d "$DIR/site-arm" ] && [ -x "$DIR/sysroot/usr/bin/python$ARM_PYTHON_VERSION" ] \
    && [ -f "$DIR/stamp" ] && [ "$(cat "$DIR/stamp")" = "$(stamp_key)" ] && host_tools_present
}

# --- 1. host packages (amd64): qemu user emulator and the aarch64 cross compiler for TVM/kernel builds
install_host_packages() {
  host_tools_present && return 0
  command -v apt-get >/dev/null || unavailable "apt-get not found; install ${HOST_PACKAGES[*]} by hand"
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || unavailable "installing ${HOST_PACKAGES[*]} needs root or passwordless sudo"
    sudo=(sudo -n)
  fi
  # Refresh the package lists only when they do not know a package yet.
  if ! apt-cache show "${HOST_PACKAGES[@]}" >/dev/null 2>&1; then
    "${sudo[@]}" apt-get update -q >/dev/null || unavailable "apt-get update failed (no network to the Debian mirror?)"
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
    "${HOST_PACKAGES[@]}" >/dev/null || unavailable "apt-get install ${HOST_PACKAGES[*]} failed"
}

# --- 2. a private apt configuration that sees only arm64 (the host's dpkg state is untouched)
write_arm_apt_config() {
  mkdir -p "$DIR/apt/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/apt/sources"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$DIR/apt/sources/"
  elif [ -f /etc/apt/sources.list ]; then
    cp /etc/apt/sources.list "$DIR/apt/sources/debian.list"
  else
    unavailable "no Debian apt sources found in /etc/apt"
  fi
  : > "$DIR/apt/status"
  cat > "$DIR/apt/apt.conf" <<CONF
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$DIR/apt/sources";
Dir::State::Lists "$DIR/apt/lists";
Dir::State::status "$DIR/apt/status";
Dir::Cache "$DIR/apt/cache";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Sandbox::User "root";
Debug::NoLocking "true";
CONF
}

# --- 3. arm64 runtime debs, unpacked into the sysroot
build_sysroot() {
  export APT_CONFIG=$DIR/apt/apt.conf
  mkdir -p "$DIR/debs"
  local pkg missing=()
  for pkg in "${ARM_DEBS[@]}"; do
    compgen -G "$DIR/debs/${pkg}_*_arm64.deb" >/dev/null || compgen -G "$DIR/debs/${pkg}_*_all.deb" >/dev/null \
      || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    compgen -G "$DIR/apt/lists/*Packages*" >/dev/null || apt-get -q update >/dev/null \
      || unavailable "apt-get update (arm64) failed (no network to the Debian mirror?)"
    ( cd "$DIR/debs" && apt-get -q download "${missing[@]}" >/dev/null ) || {
      apt-get -q update >/dev/null && ( cd "$DIR/debs" && apt-get -q download "${missing[@]}" >/dev/null )
    } || unavailable "could not download arm64 packages: ${missing[*]}"
  fi
  unset APT_CONFIG
  rm -rf "$DIR/sysroot"
  mkdir -p "$DIR/sysroot"
  for deb in "$DIR"/debs/*.deb; do dpkg-deb -x "$deb" "$DIR/sysroot"; done
  [ -x "$DIR/sysroot/usr/bin/python$ARM_PYTHON_VERSION" ] || { log "python$ARM_PYTHON_VERSION missing in the sysroot"; exit 1; }
}

# --- 4. an ARM /proc/cpuinfo: qemu -L looks up SYSROOT/<path> first. onnxruntime's cpuinfo reader
#        crashes on import when it reads the x86 host's file.
write_fake_cpuinfo() {
  mkdir -p "$DIR/sysroot/proc"
  local cpu features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
  for cpu in $(seq 0 $(( $(nproc) - 1 ))); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' \
      "$cpu" "$features"
  done > "$DIR/sysroot/proc/cpuinfo"
}

# --- 5. aarch64 wheels into one site-packages folder (pip --target; byte-compiled by the host python
#        when it is also 3.11, which saves the emulated interpreter from compiling at first import)
install_arm_wheels() {
  local py
  py=$(command -v "$REPO/.venv/bin/python" || command -v python3) || unavailable "no host python3 for pip"
  local plat=(--only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64
              --platform manylinux_2_17_aarch64 --python-version "$ARM_PYTHON_VERSION" --implementation cp
              --abi "cp${ARM_PYTHON_VERSION/./}" --abi abi3 --abi none)
  mkdir -p "$DIR/wheels"
  "$py" -m pip download -q --no-deps "${plat[@]}" -d "$DIR/wheels" "${ARM_WHEELS[@]}" \
    || unavailable "pip download of the aarch64 wheels failed (no network to PyPI?)"
  local wheels=()
  local pin name version file
  for pin in "${ARM_WHEELS[@]}"; do
    name=${pin%%==*} version=${pin##*==}
    file=$(compgen -G "$DIR/wheels/${name//-/_}-${version}-*.whl" | head -n1) \
      || file=$(compgen -G "$DIR/wheels/${name}-${version}-*.whl" | head -n1) \
      || { log "wheel for $pin not found in $DIR/wheels"; exit 1; }
    wheels+=("$file")
  done
  rm -rf "$DIR/site-arm"
  "$py" -m pip install -q --no-index --no-deps "${plat[@]}" --target "$DIR/site-arm" "${wheels[@]}"
  # Subprocesses (multiprocessing, tvm's helpers) re-run sys.executable; point it at the wrapper, since
  # exec of the aarch64 ELF itself fails (ENOEXEC) on hosts without binfmt_misc for aarch64.
  cat > "$DIR/site-arm/sitecustomize.py" <<'PY'
"""Emulated ARM lane: make sys.executable the qemu wrapper so child interpreters work."""
import os
import sys

if os.environ.get("ARM_PYTHON_WRAPPER"):
    sys.executable = sys._base_executable = os.environ["ARM_PYTHON_WRAPPER"]
PY
}

# --- 6. the wrapper: `arm-python` behaves like `python`; the caller's PYTHONPATH comes after the wheels
write_wrapper() {
  cat > "$DIR/arm-python.tmp" <<W
#!/bin/sh
# aarch64 python$ARM_PYTHON_VERSION under qemu-user (built by scripts/arm-lane.sh; see docs/arm-lane.md)
exec env -u PYTHONHOME ARM_PYTHON_WRAPPER="$DIR/arm-python" PYTHONNOUSERSITE=1 \\
  PYTHONPATH="$DIR/site-arm\${PYTHONPATH:+:\$PYTHONPATH}" \\
  qemu-aarch64-static -L "$DIR/sysroot" "$DIR/sysroot/usr/bin/python$ARM_PYTHON_VERSION" "\$@"
W
  chmod +x "$DIR/arm-python.tmp"
  mv "$DIR/arm-python.tmp" "$DIR/arm-python"
}

smoke_test() {
  "$DIR/arm-python" -c 'import platform, numpy, onnxruntime, tvm
assert platform.machine() == "aarch64", platform.machine()
print("[arm-lane]", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__,
      "onnxruntime", onnxruntime.__version__, "tvm", tvm.__version__)' >&2
}

main() {
  mkdir -p "$DIR"
  DIR=$(readlink -f "$DIR")
  exec 9>"$DIR/.lock"
  flock 9  # one builder at a time (parallel test workers, two checkouts sharing the cache)
  if lane_is_current; then
    echo "$DIR/arm-python"
    return 0
  fi
  local start=$SECONDS
  rm -f "$DIR/stamp"
  timed "host packages" install_host_packages
  write_arm_apt_config
  timed "arm64 sysroot" build_sysroot
  write_fake_cpuinfo
  timed "aarch64 wheels" install_arm_wheels
  write_wrapper
  timed "smoke test under qemu" smoke_test
  stamp_key > "$DIR/stamp"
  log "lane ready in $((SECONDS - start)) s"
  echo "$DIR/arm-python"
}

main
