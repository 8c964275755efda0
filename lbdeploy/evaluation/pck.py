"""PCK and PCKh: the fraction of joints predicted within `threshold` x a per-person length.

A joint is correct when `||prediction - truth|| <= threshold * length` (a distance exactly at
the threshold counts as correct, as in the MPII evaluation code); joints that are not annotated
are left out of both the count and the total. The per-person length (`reference_length`):

- "head" (PCKh, MPII): 0.6 x the diagonal of the head box (Andriluka et al. 2014). Without a head
  box (e.g. LSP) the head segment ||head_top - neck|| stands in.
- "torso" (PCK, LSP): the torso diameter, ||left shoulder - right hip||.

Tables are per joint group as in the paper (Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle) and
"Total" over the joints of those groups (for MPII this leaves out pelvis and thorax, as the
official evaluation does). To add a normalization, add a branch to `reference_length`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lbdeploy.data.records import PoseRecord
from lbdeploy.errors import ConfigError
from lbdeploy.pose.skeletons import JointSet

HEAD_BOX_FACTOR = 0.6
NORMS = ("head", "torso")


def reference_length(record: PoseRecord, norm: str, joint_set: JointSet) -> float:
    """The length that PCK distances of this person are divided by (0 when it cannot be measured).

    Raises:
        ConfigError: an unknown norm.
    """
    names = joint_set.joints
    if norm == "head":
        if record.head_box is not None:
            x1, y1, x2, y2 = (float(v) for v in record.head_box)
            return HEAD_BOX_FACTOR * float(np.hypot(x2 - x1, y2 - y1))
        top, neck = names.index("head_top"), names.index("upper_neck" if "upper_neck" in names else "neck")
        pair = (top, neck)
    elif norm == "torso":
        pair = (names.index("l_shoulder"), names.index("r_hip"))
    else:
        raise ConfigError(f"PCK norm must be one of {NORMS}, got {norm!r}")
    if not record.visible[list(pair)].all():
        return 0.0
    return float(np.linalg.norm(record.joints[pair[0]] - record.joints[pair[1]]))


def normalized_distances(predictions: np.ndarray, truth: np.ndarray, visible: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Distances / reference length, [N, J]; NaN where the joint or the length is unusable."""
    predictions = np.asarray(predictions, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if predictions.shape != truth.shape or predictions.ndim != 3 or predictions.shape[2] != 2:
        raise ConfigError(f"predictions {predictions.shape} and truth {truth.shape} must both be [N, J, 2]")
    lengths = np.asarray(lengths, dtype=np.float64)
    usable = np.asarray(visible, dtype=bool) & (lengths[:, None] > 0)
    distances = np.linalg.norm(predictions - truth, axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = distances / lengths[:, None]
    return np.where(usable, scaled, np.nan)


def pck_per_joint(scaled: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(correct count [J], annotated count [J]) at `threshold` from `normalized_distances`."""
    usable = ~np.isnan(scaled)
    correct = usable & (np.nan_to_num(scaled, nan=np.inf) <= threshold)
    return correct.sum(axis=0), usable.sum(axis=0)


@dataclass
class PCKReport:
    """PCK of one model on one dataset.

    Attributes:
        metric: "PCKh" or "PCK"; threshold: e.g. 0.5; norm: "head" or "torso".
        groups: table row -> percentage (NaN when no joint of the group is annotated), incl. "Total".
        joints: joint name -> percentage.
        curve: [(threshold, Total percentage)] over a range of thresholds.
        people: number of people evaluated.
    """

    metric: str
    threshold: float
    norm: str
    groups: dict
    joints: dict
    curve: list = field(default_factory=list)
    people: int = 0

    @property
    def total(self) -> float:
        """The "Total" row."""
        return self.groups["Total"]

    def to_dict(self) -> dict:
        """JSON-friendly form (NaN becomes None)."""
        clean = lambda v: None if v is None or np.isnan(v) else round(float(v), 4)  # noqa: E731
        return {"metric": self.metric, "threshold": self.threshold, "norm": self.norm, "people": self.people,
                "groups": {k: clean(v) for k, v in self.groups.items()},
                "joints": {k: clean(v) for k, v in self.joints.items()},
                "curve": [[t, clean(v)] for t, v in self.curve]}


def _percent(correct, count) -> float:
    return float(100.0 * correct / count) if count else float("nan")


def pck_report(scaled: np.ndarray, joint_set: JointSet, threshold: float, norm: str,
               curve_thresholds=None) -> PCKReport:
    """Per-group and per-joint PCK from normalized distances [N, J].

    Args:
        scaled: `normalized_distances` output.
        joint_set: the dataset's joints and PCK groups.
        threshold: the PCK threshold (0.5 for PCKh@0.5, 0.2 for PCK@0.2).
        norm: the normalization used ("head" -> PCKh, "torso" -> PCK).
        curve_thresholds: thresholds of the curve (default 0 .. 2 x threshold in 10 steps).
    """
    correct, count = pck_per_joint(scaled, threshold)
    groups = {}
    members = []
    for name, joints in joint_set.groups.items():
        idx = list(joints)
        members += idx
        groups[name] = _percent(correct[idx].sum(), count[idx].sum())
    groups["Total"] = _percent(correct[members].sum(), count[members].sum())
    per_joint = {name: _percent(correct[j], count[j]) for j, name in enumerate(joint_set.joints)}
    if curve_thresholds is None:
        curve_thresholds = np.round(np.linspace(0.0, 2.0 * threshold, 11), 4)
    curve = []
    for t in curve_thresholds:
        c, n = pck_per_joint(scaled[:, members], float(t))
        curve.append((float(t), _percent(c.sum(), n.sum())))
    metric = "PCKh" if norm == "head" else "PCK"
    return PCKReport(metric, float(threshold), norm, groups, per_joint, curve, people=int(len(scaled)))


def format_reports(reports: dict) -> str:
    """Side-by-side table of several PCKReports (column label -> report), rows as in the paper."""
    labels = list(reports)
    first = reports[labels[0]]
    width = max(10, *(len(l) + 2 for l in labels))
    header = f"{first.metric}@{first.threshold:g}".ljust(10) + "".join(l.rjust(width) for l in labels)
    rows = [header]
    for group in first.groups:
        rows.append(group.ljust(10) + "".join(f"{reports[l].groups[group]:.1f}".rjust(width) for l in labels))
    rows.append("")
    rows.append("curve".ljust(10) + "".join("".rjust(width) for _ in labels))
    for i, (t, _) in enumerate(first.curve):
        rows.append(f"@{t:g}".ljust(10) + "".join(f"{reports[l].curve[i][1]:.1f}".rjust(width) for l in labels))
    rows.append(f"({first.people} people)")
    return "\n".join(rows)
