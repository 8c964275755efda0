#!/usr/bin/env bash
# The end-to-end demo: export the bundled LBRN-S demo model (trained on the synthetic pose set,
# see docs/training.md) for x86, estimate the pose in the bundled sample image and draw it.
#
#   scripts/demo.sh [OUT_DIR]      (default OUT_DIR: demo-out)
#
# Writes OUT_DIR/model (the exported artifact), OUT_DIR/pose.png (skeleton overlay) and
# OUT_DIR/pose.json (keypoints). Uses `lbdeploy` from PATH, else the repo's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-demo-out}"
if command -v lbdeploy >/dev/null 2>&1; then
  lbdeploy=(lbdeploy)
elif [ -x .venv/bin/python ]; then
  lbdeploy=(.venv/bin/python -m cli)
else
  lbdeploy=(python3 -m cli)
fi
if [ -f "$out/model/manifest.json" ]; then
  rm -rf -- "$out/model"  # a previous demo artifact; export writes a fresh one
fi
mkdir -p "$out"
"${lbdeploy[@]}" export lbdeploy/data/demo.pt --target x86 -o "$out/model"
"${lbdeploy[@]}" infer "$out/model" lbdeploy/data/sample.jpg --detector none --draw "$out/pose.png" --json "$out/pose.json"
echo "Demo done: $out/pose.png (skeleton overlay), $out/pose.json (keypoints)"
