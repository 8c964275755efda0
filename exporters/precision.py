"""Precision strategies of `export_model`: fp32 and int8, peers with one interface.

A strategy is prepared before anything is written (bad options or calibration data fail early) and
then, inside the export:

    names = precision.write(model, path, task, opset, progress)   # model.onnx, ternary layers as our op
    precision.manifest(ternary_layers)                            # precision (and quantization)
    report = precision.gate(model, run, names, task, backend)     # parity (fp32) or accuracy (int8)
    precision.reference(model, names)                             # inputs + expected outputs for tune

Every ternary layer is written as our op; the kernel choice (exporters.kernel_choice) then turns
the layers it picks into the runtime's own conv. To add a precision, write a peer class and list it
in PRECISIONS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lbdeploy.backends import backends
from lbdeploy.errors import AccuracyError, ConfigError, ParityError

REFERENCE_IMAGES = 4  # held-out images an int8 artifact keeps for `lbdeploy tune` to re-check


@dataclass
class Fp32Precision:
    """float32: the network as exported, checked by the parity gate against PyTorch eager."""

    input_size: tuple
    mean: tuple
    std: tuple
    _inputs: object = field(default=None, init=False, repr=False)  # exporters.parity.GateInputs, once computed
    name = "fp32"
    gate_name = "parity"
    error = ParityError

    def write(self, model, path: Path, task: str, opset: int, progress) -> list[str]:
        """Write model.onnx with every ternary conv as TernaryConv; returns the output names."""
        from lbdeploy.exporters.onnx import export_onnx

        progress(f"exporting ONNX (opset {opset}, TernaryConv custom op)")
        return export_onnx(model, path, self.input_size, task, ops="custom", opset=opset, progress=progress)

    def manifest(self, ternary_layers: int) -> dict:
        """The manifest fields of a float32 artifact (the layers as our op are counted in `kernels`)."""
        return {"precision": self.name}

    def gate(self, model, run, names: list[str], task: str, backend: str):
        """The parity gate (exporters.parity)."""
        from lbdeploy.exporters.parity import check_parity

        return check_parity(run, self._gate_inputs(model, names), task, self.input_size, backend)

    def reference(self, model, names: list[str]) -> tuple[np.ndarray, dict]:
        """The parity images and PyTorch's final output on them, in float64 and float32."""
        inputs = self._gate_inputs(model, names)
        final = names[-1]
        return inputs.images, {"reference": inputs.float64[final], "float32_reference": inputs.float32[final].astype(np.float32)}

    def _gate_inputs(self, model, names: list[str]):
        """The gate's images and PyTorch's outputs on them, computed once for the gate and reference/."""
        if self._inputs is None:
            from lbdeploy.exporters.parity import gate_inputs

            self._inputs = gate_inputs(model, names, self.input_size, self.mean, self.std)
        return self._inputs


@dataclass
class Int8Precision:
    """int8: ONNX Runtime static quantization plus QTernaryConv (exporters.quantize), checked by the
    accuracy gate on held-out images. Build it with `prepare`."""

    options: object  # exporters.calibration.CalibrationOptions
    images: object  # exporters.calibration.CalibrationSet
    layout: str = "NCHW"  # QTernaryConv's memory order for the backend (exporters.quantize.ternary_layout)
    quantization: dict = field(default_factory=dict)
    name = "int8"
    gate_name = "accuracy"
    error = AccuracyError

    @classmethod
    def prepare(cls, backend: str, options, ckpt, input_size, progress) -> "Int8Precision":
        """Check the options and read the calibration and held-out images.

        Raises:
            ConfigError: a backend without int8 graphs; CalibrationError: unusable calibration data.
        """
        from lbdeploy.exporters.calibration import CalibrationOptions, load_calibration

        able = [name for name, spec in backends().items() if cls.name in spec.precisions]
        if backend not in able:
            raise ConfigError(f"--quantize {cls.name} runs on the {' or '.join(able)} backend, not {backend!r}; "
                              "drop --backend or --quantize")
        options = options or CalibrationOptions()
        options.check()
        progress(f"reading {options.images} calibration images from {options.data}")
        meta = ckpt.metadata
        spec = {"pixel_scale": meta.get("pixel_scale", 1.0 / 255.0), "mean": meta.get("mean", (0.0, 0.0, 0.0)),
                "std": meta.get("std", (1.0, 1.0, 1.0))}
        from lbdeploy.exporters.quantize import ternary_layout

        return cls(options, load_calibration(options, input_size, spec), ternary_layout(backend))

    def write(self, model, path: Path, task: str, opset: int, progress) -> list[str]:
        """Write the int8 model.onnx (every fusable ternary conv a QTernaryConv); returns the output names."""
        from lbdeploy.exporters.quantize import quantize_onnx

        input_size = tuple(self.images.calibration.shape[2:])
        names, self.quantization = quantize_onnx(model, path, input_size, task, self.images.calibration,
                                                 self.options.method, opset, progress, self.layout)
        return names

    def manifest(self, ternary_layers: int) -> dict:
        """The manifest fields of an int8 artifact: precision and quantization (`ternary_layers`
        QTernaryConv nodes after the kernel choice)."""
        details = {key: value for key, value in self.quantization.items() if key != "precision"}
        details["ternary_convs"] = ternary_layers
        return {"precision": self.name,
                "quantization": {**details, "calibration": self.options.to_dict(len(self.images.held_out))}}

    def gate(self, model, run, names: list[str], task: str, backend: str):
        """The int8 accuracy gate (exporters.accuracy) on the held-out images."""
        from lbdeploy.exporters.accuracy import check_accuracy

        return check_accuracy(model, run, names, task, self.images.held_out, backend)

    def reference(self, model, names: list[str]) -> tuple[np.ndarray, dict]:
        """A few held-out images and PyTorch's fp32 final output on them."""
        from lbdeploy.exporters.parity import torch_outputs

        images = np.ascontiguousarray(self.images.held_out[:REFERENCE_IMAGES])
        return images, {"reference": torch_outputs(model, images, names)[names[-1]].astype(np.float32)}


PRECISIONS = {"fp32": Fp32Precision, "int8": Int8Precision}
QUANTIZED = tuple(name for name in PRECISIONS if name != "fp32")  # the `--quantize` choices


def prepare_precision(quantize: str | None, backend: str, calibration, ckpt, input_size, progress):
    """The strategy for `--quantize` (None: fp32), prepared.

    Raises:
        ConfigError: an unknown precision or one the backend lacks; CalibrationError: bad calibration data.
    """
    if quantize is None:
        meta = ckpt.metadata
        return Fp32Precision(tuple(input_size), tuple(meta["mean"]), tuple(meta["std"]))
    if quantize not in QUANTIZED:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZED)}, got {quantize!r}")
    return PRECISIONS[quantize].prepare(backend, calibration, ckpt, input_size, progress)
