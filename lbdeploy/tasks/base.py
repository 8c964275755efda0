"""The `Task` record every task module subclasses (lbdeploy.tasks) and what its rules return."""

from __future__ import annotations

from abc import ABC, abstractmethod

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Agreement:
    """How an exported model's final output agrees with the reference's, by one gate's rule.

    Attributes:
        passed: the rule holds.
        fields: figures for the gate's report (its JSON keys), e.g. {"keypoint_agreement": 1.0}.
        lines: the figures in words, for the printed report.
    """

    passed: bool
    fields: dict = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


class Task(ABC):
    """One task: how its outputs are named and described in a manifest, and when two runs agree.

    Subclasses set the class attributes and override what differs; every method takes and returns
    numpy arrays or JSON-ready dicts (no torch), so the runtime can use them on a board.

    Attributes:
        name: the manifest's `task` value. section: the task's own manifest section (None: none).
        section_required: a manifest of the task must have the section to be run.
        unit: what the agreement rules count ("joints", "images", "pixels").
    """

    name: str = ""
    section: str | None = None
    section_required: bool = True
    unit: str = "images"

    @abstractmethod
    def output_names(self, count: int) -> list[str]:
        """The model's output names for `count` outputs, the final one last."""
        ...

    @abstractmethod
    def output_shapes(self, metadata: dict, input_size, count: int) -> list[tuple]:
        """The shape of each of `count` outputs for a batch of one, from checkpoint metadata and (H, W)."""
        ...

    def output_fields(self, index: int) -> dict:
        """Extra manifest keys of output `index` (e.g. a pose output's stack)."""
        return {}

    def manifest_section(self, metadata: dict, input_size, output_shapes: list) -> dict | None:
        """The task's manifest section from checkpoint metadata (None: the task has none)."""
        return None

    def check_section(self, manifest: dict, require) -> None:
        """Check the task's manifest section; `require(value, types, field)` raises ArtifactError."""
        if self.section and self.section in manifest:
            require(manifest[self.section], (dict,), self.section)

    @abstractmethod
    def parity(self, reference: np.ndarray, output: np.ndarray, tolerance: np.ndarray) -> Agreement:
        """The parity gate's rule on the final output (float64 reference, per-map tolerance)."""
        ...

    @abstractmethod
    def accuracy(self, reference: np.ndarray, output: np.ndarray) -> Agreement:
        """The int8 accuracy gate's rule on the final output (PyTorch fp32 reference)."""
        ...

    @abstractmethod
    def precision(self, reference: np.ndarray, candidate: np.ndarray) -> Agreement:
        """The reduced-precision engine gate's rule on the final output (float32 reference)."""
        ...


def top1_ties(reference: np.ndarray, chosen: np.ndarray, rtol: float) -> np.ndarray:
    """Rows of `reference` [rows, values] whose value at `chosen` is within `rtol` of their maximum
    (relative to the maximum's magnitude): two near-equal answers that rounding may swap."""
    rows = np.arange(reference.shape[0])
    peak = reference.max(axis=1)
    return peak - reference[rows, chosen] <= rtol * np.maximum(np.abs(peak), 1e-12)
