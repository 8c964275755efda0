"""Shared TernaryConv test vectors: every backend runs the same named cases.

Each case is generated from a seed by the reference implementation and stored as
`tests/vectors/<name>.npz` with arrays x, w (int8), w_packed (uint8), scale, bias, y and a JSON
string `attrs`. Regenerate with `python -m lbdeploy.ops.vectors tests/vectors`; a test checks the
stored files still equal what the reference produces.

To add a case, append a `VectorCase` to CASES and regenerate.

`non_finite_relu` puts NaN, +inf and -inf into x: every backend must give the reference's answer
(docs/ops/TernaryConv.md, "Non-finite inputs": zero taps read nothing, IEEE through the others,
relu(NaN) = NaN). The files under `tests/vectors/invalid/` (`INVALID_CASES`) hold packed weights
with the invalid code 3, in a weight and in the padding past K: every backend must refuse them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lbdeploy.ops.ternary_conv import TernaryConvAttrs, pack_ternary, ternary_conv_reference


@dataclass(frozen=True)
class VectorCase:
    """One TernaryConv configuration to test every backend on."""

    name: str
    n: int
    cin: int
    cout: int
    h: int
    w: int
    k: int = 3
    stride: int = 1
    pad: int = 1
    dilation: int = 1
    group: int = 1
    density: float = 0.5
    activation: str = "none"
    zero_filters: int = 0  # this many leading output channels get all-zero filters
    non_finite: bool = False  # put NaN, +inf and -inf into x
    seed: int = 0

    def attrs(self) -> TernaryConvAttrs:
        """The op attributes of this case."""
        return TernaryConvAttrs(
            kernel_shape=(self.k, self.k),
            strides=(self.stride, self.stride),
            pads=(self.pad,) * 4,
            dilations=(self.dilation, self.dilation),
            group=self.group,
            activation=self.activation,
        )


CASES = (
    VectorCase("basic_3x3", n=1, cin=16, cout=16, h=8, w=8),
    VectorCase("odd_hw", n=1, cin=8, cout=12, h=7, w=11),
    VectorCase("stride2", n=1, cin=16, cout=8, h=9, w=10, stride=2),
    VectorCase("cin_not_multiple_of_vector", n=1, cin=5, cout=7, h=6, w=6),
    VectorCase("density_0.05", n=1, cin=32, cout=16, h=8, w=8, density=0.05),
    VectorCase("density_0.95", n=1, cin=32, cout=16, h=8, w=8, density=0.95),
    VectorCase("kernel_1x1", n=1, cin=24, cout=16, h=5, w=7, k=1, pad=0),
    VectorCase("kernel_5x5", n=1, cin=8, cout=8, h=9, w=9, k=5, pad=2),
    VectorCase("groups_4", n=1, cin=16, cout=8, h=6, w=6, group=4),
    VectorCase("batch_3", n=3, cin=8, cout=8, h=6, w=5),
    VectorCase("all_zero_filters", n=1, cin=8, cout=8, h=5, w=5, zero_filters=3),
    VectorCase("relu", n=2, cin=16, cout=16, h=8, w=8, activation="relu"),
    VectorCase("sigmoid", n=1, cin=16, cout=16, h=8, w=8, activation="sigmoid"),
    VectorCase("dilation2_no_pad", n=1, cin=8, cout=8, h=10, w=10, dilation=2, pad=0),
    VectorCase("wide_128", n=1, cin=128, cout=128, h=16, w=16, activation="relu", seed=7),
    VectorCase("non_finite_relu", n=1, cin=8, cout=8, h=8, w=8, activation="relu", zero_filters=2, non_finite=True),
)

# name -> (the valid case it corrupts, index of the 2-bit code set to 3 in row 1: a weight / a padding code).
# cin_not_multiple_of_vector has K = 5 * 3 * 3 = 45 weights per row, packed in 12 bytes: codes 45..47 are padding.
INVALID_CASES = {"code3_weight": ("cin_not_multiple_of_vector", 7),
                 "code3_padding": ("cin_not_multiple_of_vector", 46)}


def generate(case: VectorCase) -> dict[str, np.ndarray]:
    """Inputs and the reference output of `case` (deterministic in its seed)."""
    rng = np.random.default_rng(case.seed + 1000)
    cin_g = case.cin // case.group
    x = rng.standard_normal((case.n, case.cin, case.h, case.w)).astype(np.float32)
    if case.non_finite:
        x[0, 0, 2, 3], x[0, 1, 5, 5], x[0, 2, 1, 6], x[0, 3, 6, 1] = np.nan, np.inf, -np.inf, np.inf
    shape = (case.cout, cin_g, case.k, case.k)
    nonzero = rng.random(shape) < case.density
    signs = np.where(rng.random(shape) < 0.5, -1, 1)
    w = (nonzero * signs).astype(np.int8)
    w[: case.zero_filters] = 0
    scale = rng.uniform(0.5, 1.5, case.cout).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, case.cout).astype(np.float32)
    attrs = case.attrs()
    y = ternary_conv_reference(x, w, scale, bias, attrs)
    return {
        "x": x,
        "w": w,
        "w_packed": pack_ternary(w),
        "scale": scale,
        "bias": bias,
        "y": y,
        "attrs": np.array(json.dumps(asdict(case))),
    }


def invalid(name: str) -> dict[str, np.ndarray]:
    """The arrays of INVALID_CASES[name]: its valid case with code 3 written into w_packed (no y)."""
    base, code = INVALID_CASES[name]
    arrays = generate(next(c for c in CASES if c.name == base))
    packed = arrays["w_packed"].copy()
    packed[1, code // 4] |= np.uint8(3 << (2 * (code % 4)))
    return {**{k: v for k, v in arrays.items() if k not in ("y", "w")}, "w_packed": packed}



def load(path: Path, case_type: type = VectorCase) -> tuple[VectorCase, dict[str, np.ndarray]]:
    """Read one stored vector file back as (case, arrays); `case_type` is the case dataclass."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    case = case_type(**json.loads(str(arrays.pop("attrs"))))
    return case, arrays


def write_all(folder: Path, cases=CASES, make=generate) -> list[Path]:
    """Generate every case of `cases` with `make` into `folder`; returns the written paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in cases:
        path = folder / f"{case.name}.npz"
        np.savez_compressed(path, **make(case))
        paths.append(path)
    (folder / "invalid").mkdir(exist_ok=True)
    for name in INVALID_CASES:
        path = folder / "invalid" / f"{name}.npz"
        np.savez_compressed(path, **invalid(name))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors")):
        print(p)
