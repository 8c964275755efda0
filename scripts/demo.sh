#!/usr/bin/env bash
# The end-to-end demo: export the bundled LBRN-S demo model (trained on the synthetic pose set,
# see docs/training.md) for x86, estimate the pose in the bundled sample image and draw it.
#
#   scripts/demo.sh [OUT_DIR]      (default OUT_DIR: demo-out)
#
# Writes OUT_DIR/model (the exported artifact), OUT_DIR/pose.png (skeleton overlay) and
# OUT_DIR/pose.json (keypoints); then OUT_DIR/scene-pose.* (several generated people found by a
# detector) and OUT_DIR/clip-pose.mp4 + clip-poses.jsonl (a generated clip, tracked ids).
# Uses `lbdeploy` from PATH, else the repo's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-demo-out}"
if command -v lbdeploy >/dev/null 2>&1; then
  lbdeploy=(lbdeploy)
  python=("$(dirname "$(command -v lbdeploy)")/python")
  [ -x "${python[0]}" ] || python=(python3)
elif [ -x .venv/bin/python ]; then
  lbdeploy=(.venv/bin/python -m lbdeploy.cli)
  python=(.venv/bin/python)
else
  lbdeploy=(python3 -m lbdeploy.cli)
  python=(python3)
fi
if [ -f "$out/model/manifest.json" ]; then
  rm -rf -- "$out/model"  # a previous demo artifact; export writes a fresh one
fi
mkdir -p "$out"
"${lbdeploy[@]}" export lbdeploy/data/demo.pt --target x86 -o "$out/model"
"${lbdeploy[@]}" infer "$out/model" lbdeploy/data/sample.jpg --detector none --draw "$out/pose.png" --json "$out/pose.json"
# People first and tracking: generated people off-centre, several per image, found by the synthetic
# scenes' ONNX test detector (docs/runtime.md), then a short clip with tracked ids.
"${python[@]}" -m lbdeploy.runtime.testing.scene_files "$out/scenes"
"${lbdeploy[@]}" infer "$out/model" "$out/scenes/scene.png" --detector "$out/scenes/scene_det.onnx" \
  --draw "$out/scene-pose.png" --json "$out/scene-pose.json"
"${lbdeploy[@]}" infer "$out/model" "$out/scenes/clip.mp4" --detector "$out/scenes/scene_det.onnx" \
  --draw "$out/clip-pose.mp4" --json "$out/clip-poses.jsonl" --no-progress
echo "Demo done: $out/pose.png (skeleton overlay), $out/pose.json (keypoints);"
echo "  several people: $out/scene-pose.png, $out/scene-pose.json; video: $out/clip-pose.mp4, $out/clip-poses.jsonl"
