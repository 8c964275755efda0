"""Leeds Sports Pose (LSP) and its extension LSPET, from their joints.mat.

PATH is the dataset folder with `joints.mat` and `images/im0001.jpg ...` (LSP) or
`images/im00001.jpg ...` (LSPET). The array `joints` is read with scipy.io.loadmat in either layout:

- 3 x 14 x N (LSP): rows x, y and a flag; splits: the first half of the images is "train", the
  second half "val" (for the 2000 LSP images: 1000 / 1000, the usual train / test split);
- 14 x 3 x N (LSPET): columns x, y and a flag; every image is "train" (there is no "val").

Coordinates are MATLAB 1-based and shifted to 0-based. A joint counts as annotated when its
coordinates are positive: LSP labels occluded joints too, and the standard LSP evaluation scores
them, so the occlusion flag (whose sense differs between LSP and LSPET) is not used.
As in the paper, the person crop is the whole image (LSP images are person-centred): centre =
image centre, scale = image height / 200 (the larger side for landscape images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lbdeploy.data.records import PoseDataset, PoseRecord
from lbdeploy.errors import BackendUnavailable, ConfigError, InputError
from lbdeploy.pose.affine import image_center_scale
from lbdeploy.pose.skeletons import LSP
from lbdeploy.transforms import load_image

JOINTS = 14


def read_joints(path: Path) -> tuple[np.ndarray, str]:
    """joints.mat -> ([N, 14, 3] float64 array of x, y, flag; layout "lsp" or "lspet").

    Raises:
        BackendUnavailable: scipy is missing; InputError: unreadable file or unknown shape.
    """
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise BackendUnavailable("reading LSP needs scipy; pip install 'lbdeploy[torch]'") from err
    try:
        data = loadmat(str(path))
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"{path} is not a readable MATLAB file ({err})") from None
    if "joints" not in data:
        raise InputError(f"{path} holds no 'joints' array (found {sorted(k for k in data if not k.startswith('__'))})")
    joints = np.asarray(data["joints"], dtype=np.float64)
    if joints.ndim == 3 and joints.shape[:2] == (3, JOINTS):
        return joints.transpose(2, 1, 0), "lsp"
    if joints.ndim == 3 and joints.shape[:2] == (JOINTS, 3):
        return joints.transpose(2, 0, 1), "lspet"
    raise InputError(f"{path}: joints has shape {joints.shape}; expected 3x14xN (LSP) or 14x3xN (LSPET)")


class LSPDataset(PoseDataset):
    """LSP / LSPET people of one split (see the module docstring).

    Args:
        root: folder with joints.mat and images/.
        split: "train" or "val".
    """

    name = "lsp"
    joint_set = LSP
    metric = "pck"
    threshold = 0.2
    norm = "torso"

    def __init__(self, root: Path, split: str):
        super().__init__(split)
        self.root = Path(root)
        mat = self.root / "joints.mat"
        if not mat.is_file():
            raise ConfigError(f"LSP folder {self.root} has no joints.mat")
        joints, layout = read_joints(mat)
        count = len(joints)
        if layout == "lsp":
            half = count // 2
            indices = range(half) if split == "train" else range(half, count)
        else:
            indices = range(count) if split == "train" else range(0)
        digits = 5 if layout == "lspet" else 4
        self._joints = joints
        self._names = {i: f"im{i + 1:0{digits}d}.jpg" for i in indices}
        self._indices = list(indices)

    def __len__(self) -> int:
        return len(self._indices)

    def record(self, index: int) -> PoseRecord:
        """The person of image `index` of this split; its crop covers the whole image."""
        i = self._indices[index]
        path = self.root / "images" / self._names[i]
        try:
            from PIL import Image

            with Image.open(path) as img:
                width, height = img.size
        except OSError as err:
            raise InputError(f"LSP image {path} cannot be read ({err})") from None
        xy = self._joints[i, :, :2] - 1.0
        visible = (self._joints[i, :, 0] > 0) & (self._joints[i, :, 1] > 0)
        center, scale = image_center_scale(width, height, 1.0)
        return PoseRecord(image=str(path), joints=xy, visible=visible, center=center, scale=float(scale))

    def load_image(self, record: PoseRecord) -> np.ndarray:
        """Read the record's image as HxWx3 uint8 RGB."""
        return load_image(record.image)
