"""Test harness helpers that ship with lbdeploy.

- `arm_lane`: the emulated aarch64 lane (qemu-user + an aarch64 CPython built by
  scripts/arm-lane.sh) and helpers that run code, ONNX models and exported artifacts in it.
- `ort_driver`: the small ONNX Runtime runner those helpers execute inside the lane (numpy and
  onnxruntime only, so it runs on a board as well).

This package imports nothing at import time; add a module per harness.
"""
