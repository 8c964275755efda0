"""Joint sets of the pose datasets: names, left/right flip pairs, skeleton edges, PCK joint groups.

Index order follows each dataset's annotation files (MPII: 16 joints, LSP: 14 joints).
To add a dataset, add one `JointSet` and list it in JOINT_SETS under its joint count.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JointSet:
    """Everything a runtime or evaluator needs to know about a dataset's joints."""

    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    groups: dict  # PCK table row -> joint indices, as in the paper's tables

    def metadata(self) -> dict:
        """The JSON-friendly fields stored in checkpoints and manifests."""
        return {
            "dataset": self.name,
            "joints": list(self.joints),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "skeleton": [list(e) for e in self.skeleton],
        }


MPII = JointSet(
    name="mpii",
    joints=("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck",
            "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
              (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15)),
    groups={"Head": (8, 9), "Shoulder": (12, 13), "Elbow": (11, 14), "Wrist": (10, 15),
            "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5)},
)

LSP = JointSet(
    name="lsp",
    joints=("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow", "r_shoulder",
            "l_shoulder", "l_elbow", "l_wrist", "neck", "head_top"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
    skeleton=((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 12), (12, 9), (9, 10),
              (10, 11), (12, 13), (2, 8), (3, 9)),
    groups={"Head": (12, 13), "Shoulder": (8, 9), "Elbow": (7, 10), "Wrist": (6, 11),
            "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5)},
)

JOINT_SETS = {16: MPII, 14: LSP}

# Aliases used across the project.
MPII_JOINTS, MPII_FLIP_PAIRS, MPII_SKELETON = MPII.joints, MPII.flip_pairs, MPII.skeleton
LSP_JOINTS, LSP_FLIP_PAIRS, LSP_SKELETON = LSP.joints, LSP.flip_pairs, LSP.skeleton


def joint_set(num_joints: int) -> JointSet:
    """The joint set with `num_joints` joints (16: MPII, 14: LSP)."""
    from lbdeploy.errors import ConfigError

    if num_joints not in JOINT_SETS:
        raise ConfigError(f"no joint set with {num_joints} joints; known: {sorted(JOINT_SETS)}")
    return JOINT_SETS[num_joints]
