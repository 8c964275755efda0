"""The classification task: one `logits` output [N, classes] (the paper's CIFAR ResNets).

Agreement rules on the logits: parity and int8 accuracy compare every image's top-1 class with
the reference's (parity: all of them, int8: the gate's share); a reduced-precision engine may
also swap two logits within PRECISION_TIE_RTOL of each other. The manifest's `classification`
section holds the number of classes and their labels (CIFAR-10's names for a 10-class model,
`class_<i>` otherwise, unless the checkpoint names them).
"""

from __future__ import annotations

import numpy as np

from lbdeploy.tasks.base import Agreement, Task, top1_ties

PRECISION_TIE_RTOL = 1e-2  # relative to the float32 top logit: fp16 rounding
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_labels(classes: int, metadata: dict) -> list[str]:
    """The label of every class: the metadata's, CIFAR-10's for 10 classes, else class_<i>."""
    if metadata.get("labels"):
        return [str(label) for label in metadata["labels"]]
    return list(CIFAR10_LABELS) if classes == 10 else [f"class_{i}" for i in range(classes)]


class ClassificationTask(Task):
    """Image classification: `logits` [N, classes] and the `classification` section (classes, labels)."""

    name = "classification"
    section = "classification"
    section_required = False  # artifacts exported before the section existed name their classes by the output
    unit = "images"

    def output_names(self, count: int) -> list[str]:
        """The single output `logits`."""
        return ["logits"]

    def output_shapes(self, metadata: dict, input_size, count: int) -> list[tuple]:
        """[1, classes]."""
        return [(1, int(metadata["classes"]))]

    def manifest_section(self, metadata: dict, input_size, output_shapes: list) -> dict:
        """classes and labels."""
        classes = int(output_shapes[-1][1])
        return {"classes": classes, "labels": class_labels(classes, metadata)}

    def check_section(self, manifest: dict, require) -> None:
        """classes is an integer and labels a list of that many names."""
        super().check_section(manifest, require)
        section = manifest.get(self.section)
        if section is not None:
            require(section.get("classes"), (int,), "classification.classes")
            require(section.get("labels", []), (list,), "classification.labels")

    def parity(self, reference, output, tolerance) -> Agreement:
        """Every image keeps its top-1 class."""
        agreement = float((reference.argmax(1) == output.argmax(1)).mean())
        return Agreement(agreement == 1.0, {"top1_agreement": agreement},
                         [f"identical top-1 classes: {agreement:.1%}"])

    def accuracy(self, reference, output) -> Agreement:
        """Share of images whose top-1 class is PyTorch fp32's."""
        agreement = float((reference.argmax(1) == output.argmax(1)).mean())
        return Agreement(True, {"agreement": agreement}, [f"identical top-1 classes: {agreement:.1%}"])

    def precision(self, reference, candidate) -> Agreement:
        """Every image's top-1 class agrees with float32's, or ties with it."""
        chosen = candidate.argmax(axis=1)
        agreeing = (reference.argmax(axis=1) == chosen) | top1_ties(reference, chosen, PRECISION_TIE_RTOL)
        return Agreement(bool(agreeing.all()), {"agreeing": int(agreeing.sum()), "total": int(reference.shape[0]),
                                                "worst_keypoint_shift": None}, [])
