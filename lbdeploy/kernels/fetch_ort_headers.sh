#!/usr/bin/env bash
# Fetch the ONNX Runtime C/C++ headers (they are not shipped in the onnxruntime wheel) into a cache
# folder and print the include folder on stdout.
#
# Usage: bash lbdeploy/kernels/fetch_ort_headers.sh [CACHE_DIR]   (run by lbdeploy.kernels.headers)
#   CACHE_DIR defaults to $LBDEPLOY_CACHE/ort-headers, else ~/.cache/lbdeploy/ort-headers
#   (lbdeploy.kernels.headers.header_cache, the folder it looks in first).
#
# Source: Debian's libonnxruntime-dev package (headers only, ~120 kB) from the unstable suite,
# downloaded with a private apt configuration, so the system's apt state is left untouched.
# Headers at C API version N work with every runtime that serves API >= N (onnxruntime >= 1.N-ish).
# Needs apt-get and dpkg-deb (any Debian/Ubuntu), Debian's archive keyring (Ubuntu and Jetson Linux
# lack it: `apt install debian-archive-keyring`) and access to a Debian mirror. A board needs none of
# this: `lbdeploy bundle` carries the headers and install.sh puts them into the cache folder.
set -euo pipefail

if [[ $# -ge 1 ]]; then
  cache=$1
else
  cache=${LBDEPLOY_CACHE:-$HOME/.cache/lbdeploy}/ort-headers
fi
include=$cache/hdr/usr/include/onnxruntime

if [[ -f $include/onnxruntime_c_api.h && -f $include/onnxruntime_cxx_api.h ]]; then
  echo "$include"
  exit 0
fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "fetch-ort-headers: '$tool' not found; set ORT_INCLUDE_DIR to a folder holding onnxruntime_c_api.h instead" >&2; exit 1; }
done

work=$cache/apt
mkdir -p "$work"/lists/partial "$work"/cache/archives/partial "$work"/sources "$cache/hdr"

# A sources file for Debian unstable, on the machine's own mirror where it has one.
mirror=http://deb.debian.org/debian
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  found=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  mirror=${found:-$mirror}
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [[ ! -f $keyring ]]; then
  echo "fetch-ort-headers: Debian's archive keyring ($keyring) is missing (Ubuntu, Jetson Linux), so Debian's" \
       "package cannot be verified; install it (sudo apt install debian-archive-keyring), set ORT_INCLUDE_DIR to a" \
       "folder holding onnxruntime_c_api.h, or use a bundle made by \`lbdeploy bundle\`, which carries the headers" >&2
  exit 1
fi
{
  echo "Types: deb"
  echo "URIs: $mirror"
  echo "Suites: sid"
  echo "Components: main"
  echo "Signed-By: $keyring"
} > "$work/sources/sid.sources"

apt_opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/sources"
          -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$work/cache" && apt-get "${apt_opts[@]}" download libonnxruntime-dev >&2)
deb=$(ls "$work"/cache/libonnxruntime-dev_*.deb | head -n1)
dpkg-deb -x "$deb" "$cache/hdr"
rm -rf "$work/lists" "$work/cache"

if [[ ! -f $include/onnxruntime_cxx_api.h ]]; then
  echo "fetch-ort-headers: $deb did not contain onnxruntime_cxx_api.h" >&2
  exit 1
fi
grep -m1 "define ORT_API_VERSION" "$include/onnxruntime_c_api.h" >&2
echo "$include"
