"""Test harness helpers that ship with lbdeploy.

- `arm_lane`: the emulated aarch64 lane (qemu-user + an aarch64 CPython built by
  scripts/arm-lane.sh) and helpers that run code, ONNX models and exported artifacts in it.
- `ort_driver`: runs a batch of ONNX models with ONNX Runtime inside the lane (numpy and
  onnxruntime only, so it runs on a board as well).
- `artifact_runner`: runs an exported artifact through the board-side runtime inside the lane.
- `scene_detector`: an ONNX person detector (MMDeploy layout) for the synthetic scenes.

This package imports nothing at import time; add a module per harness.
"""
