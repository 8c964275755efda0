"""The pose task: heatmaps per stack, the last decoded into keypoints (lbdeploy.pose).

Agreement rules on the final heatmaps [N, J, h, w] (docs/export.md):

- parity: every joint keeps its argmax, or the reference at the exported argmax lies within the
  map's tolerance of its peak (a numerical tie);
- int8 accuracy: the argmax lies within JOINT_TOLERANCE_PX heatmap pixels (Chebyshev) of PyTorch
  fp32's, or PyTorch's heatmap there is within TIE_FRACTION of its range from the peak (a second
  mode of a multi-modal heatmap);
- reduced-precision engines: the decoded keypoint (argmax + quarter-pixel refinement) lies within
  KEYPOINT_TOLERANCE heatmap pixels of float32's, or is a tie within PRECISION_TIE_RTOL of the peak.
"""

from __future__ import annotations

import numpy as np

from lbdeploy.errors import ArtifactError
from lbdeploy.pose.decode import decode_heatmaps
from lbdeploy.tasks.base import Agreement, Task, top1_ties

JOINT_TOLERANCE_PX = 1
TIE_FRACTION = 0.05  # of the fp32 heatmap's range: a second mode this close is a tie, not an int8 error
KEYPOINT_TOLERANCE = 1.0  # heatmap pixels (x heatmap_stride input pixels)
PRECISION_TIE_RTOL = 1e-2  # relative to the float32 peak: fp16 rounding of a heatmap


def keypoint_offsets(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Chebyshev distance in heatmap pixels between the argmax of each joint, [N, J] ints."""
    n, j, _, width = reference.shape
    ref = reference.reshape(n, j, -1).argmax(-1)
    out = output.reshape(n, j, -1).argmax(-1)
    return np.maximum(np.abs(ref // width - out // width), np.abs(ref % width - out % width))


def near_ties(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """[N, J] bool: PyTorch's heatmap at the int8 argmax is within TIE_FRACTION of its own peak, as a
    fraction of the heatmap's range (peak - minimum)."""
    n, j = reference.shape[:2]
    ref = reference.reshape(n, j, -1)
    at_output = np.take_along_axis(ref, output.reshape(n, j, -1).argmax(-1)[..., None], -1)[..., 0]
    peak = ref.max(-1)
    return peak - at_output <= TIE_FRACTION * (peak - ref.min(-1))


class PoseTask(Task):
    """Human pose: `heatmaps_<stack>` outputs and the `pose` section (joints, flip pairs, skeleton, stride)."""

    name = "pose"
    section = "pose"
    unit = "joints"

    def output_names(self, count: int) -> list[str]:
        """heatmaps_0 .. heatmaps_{S-1}, one per stack."""
        return [f"heatmaps_{i}" for i in range(count)]

    def output_shapes(self, metadata: dict, input_size, count: int) -> list[tuple]:
        """[1, joints, H / stride, W / stride] for every stack."""
        height, width = input_size
        stride = int(metadata.get("heatmap_stride", 4))
        return [(1, len(metadata["joints"]), height // stride, width // stride)] * count

    def output_fields(self, index: int) -> dict:
        """The stack each heatmap output comes from."""
        return {"stack": index}

    def manifest_section(self, metadata: dict, input_size, output_shapes: list) -> dict:
        """joints, flip_pairs, skeleton (those the metadata has) and heatmap_stride."""
        section = {key: metadata[key] for key in ("joints", "flip_pairs", "skeleton") if key in metadata}
        section["heatmap_stride"] = int(metadata.get("heatmap_stride", input_size[0] // output_shapes[-1][2]))
        return section

    def check_section(self, manifest: dict, require) -> None:
        """The pose section is an object with list fields; in a pose manifest, joint names (when
        given) name every channel of the final heatmaps (no mislabeled output)."""
        super().check_section(manifest, require)
        pose = manifest.get("pose", {})
        for key in ("joints", "flip_pairs", "skeleton"):
            if key in pose:
                require(pose[key], (list,), f"pose.{key}")
        if manifest["task"] != self.name or "joints" not in pose:
            return
        for index, name in enumerate(pose["joints"]):
            require(name, (str,), f"pose.joints[{index}]")
        final = [out for out in manifest["outputs"] if out.get("final")]
        channels = final[-1]["shape"][1] if final else None
        if channels is not None and len(pose["joints"]) != channels:
            raise ArtifactError(f"manifest field 'pose.joints' names {len(pose['joints'])} joints but the model's "
                                f"final output has {channels} heatmaps; re-export the model")

    def parity(self, reference, output, tolerance) -> Agreement:
        """Every joint keeps its argmax, or ties within the map's tolerance."""
        n, j = reference.shape[:2]
        ref_flat, out_flat = reference.reshape(n * j, -1), output.reshape(n * j, -1)
        ref_arg, out_arg = ref_flat.argmax(1), out_flat.argmax(1)
        strict = ref_arg == out_arg
        rows = np.arange(n * j)
        tie = ref_flat[rows, ref_arg] - ref_flat[rows, out_arg] <= tolerance.reshape(n * j)
        agreement, strict_share = float((strict | tie).mean()), float(strict.mean())
        return Agreement(agreement == 1.0, {"keypoint_agreement": agreement, "keypoint_agreement_strict": strict_share},
                         [f"joints with identical argmax: {agreement:.1%} (strict {strict_share:.1%})"])

    def accuracy(self, reference, output) -> Agreement:
        """Share of joints within JOINT_TOLERANCE_PX of PyTorch fp32 or at a near-tie (`passed` is the
        gate's to decide from `agreement`)."""
        offsets = keypoint_offsets(reference, output)
        close = offsets <= JOINT_TOLERANCE_PX
        fields = {"joints": int(offsets.size), "agreement_strict": float(close.mean()),
                  "agreement": float((close | near_ties(reference, output)).mean()), "max_offset_px": int(offsets.max())}
        line = (f"joints within {JOINT_TOLERANCE_PX} heatmap pixel of PyTorch fp32 or at a near-tie: "
                f"{fields['agreement']:.1%} of {fields['joints']} (strict {fields['agreement_strict']:.1%}, "
                f"max offset {fields['max_offset_px']} px)")
        return Agreement(True, fields, [line])

    def precision(self, reference, candidate) -> Agreement:
        """Every decoded keypoint within KEYPOINT_TOLERANCE heatmap pixels of float32's, or tied."""
        n, j = reference.shape[:2]
        ref_xy, _ = decode_heatmaps(reference)
        out_xy, _ = decode_heatmaps(candidate)
        shift = np.abs(out_xy - ref_xy).max(axis=-1).reshape(n * j)
        tied = top1_ties(reference.reshape(n * j, -1), candidate.reshape(n * j, -1).argmax(axis=1), PRECISION_TIE_RTOL)
        agreeing = (shift <= KEYPOINT_TOLERANCE) | tied
        worst = float(shift[~tied].max()) if (~tied).any() else 0.0
        return Agreement(bool(agreeing.all()), {"agreeing": int(agreeing.sum()), "total": n * j,
                                                "worst_keypoint_shift": worst},
                         [f"worst keypoint shift {worst:.2f} heatmap px (tolerance {KEYPOINT_TOLERANCE})"])
