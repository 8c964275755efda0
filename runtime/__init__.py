"""lbdeploy runtime: run exported artifacts (or model.pt checkpoints) on images, from Python, the
CLI (`lbdeploy infer`) or an HTTP server (`lbdeploy serve`).

Light by design for boards: importing this package and running the ONNX Runtime backend never
imports torch. Modules: `artifact` (manifest + checksums), `backends` (ORT, torch, TVM, TensorRT
behind one protocol), `transforms` (image loading, crop, normalization), `predictor`
(`Predictor`), `detection` (person detectors), `video` (files and cameras), `tracking` (ids across
frames), `stream` (the video frame loop), `results` (JSON + overlay drawing), `server` (FastAPI
app), `schemas` (its response shapes), `ray_serve` (Ray Serve scale-out), `commands` (CLI).
"""
