"""The saliency predictor: image in, saliency map (probabilities at the image's size) out, on any backend.

    from lbdeploy.runtime.saliency import SaliencyPredictor
    predictor = SaliencyPredictor("out/")            # a saliency artifact folder (or a CPD model.pt)
    result = predictor.predict("photo.jpg")
    result.probabilities  # [H, W] float32 in [0, 1], the image's own size

Pipeline (as the saliency set is trained and evaluated, lbdeploy.evaluation.saliency_eval): the
whole image resized (bilinear) to the model input, normalized per the manifest, one backend call,
the manifest's output activation (sigmoid) on the final logit map, and the map resized (bilinear)
back to the image. Loading and backend choice are shared with the pose Predictor
(runtime.loading). To support another output activation, add it to ACTIVATIONS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbdeploy.artifact import final_output
from lbdeploy.data.saliency import resize_image, resize_probabilities
from lbdeploy.errors import ConfigError
from lbdeploy.transforms import DEFAULT_MAX_PIXELS, load_image, normalize
from lbdeploy.runtime.deadline import check_deadline
from lbdeploy.runtime.loading import PredictorRecipe, load_model_source


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64 without overflow for any logit (an untrained model's can be ~1e9)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))


ACTIVATIONS = {"sigmoid": sigmoid}


@dataclass
class SaliencyResult:
    """The saliency map of one image.

    Attributes:
        probabilities: [H, W] float32 in [0, 1] at the image's size (1 = salient).
        image_size: (width, height) of the input image.
    """

    probabilities: np.ndarray
    image_size: tuple[int, int]


class SaliencyPredictor:
    """Salient object detection on a saliency artifact folder or model.pt (task "saliency").

    Args:
        artifact_or_model_pt: artifact folder written by `lbdeploy export`, or a saliency model.pt.
        backend: "auto" (the artifact's own backend; "torch" for a model.pt) or a name of lbdeploy.backends.
        threads: intra-op threads for the backend (None: its default).
        max_pixels: images with more pixels are refused with InputError.
        **backend_opts: passed to the backend constructor.

    Raises:
        ArtifactError: a missing, unknown or modified artifact; ConfigError: not a saliency model, or
        an output activation this runtime does not know; BackendUnavailable / KernelLibraryError: the
        backend cannot run here.
    """

    def __init__(self, artifact_or_model_pt, backend: str = "auto", threads: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, **backend_opts):
        source, self.manifest, self.backend = load_model_source(artifact_or_model_pt, backend, threads, **backend_opts)
        if self.manifest.get("task") != "saliency" or "saliency" not in self.manifest:
            raise ConfigError(f"{source} is a {self.manifest.get('task')!r} model; the SaliencyPredictor runs "
                              "saliency models (runtime.predictor.Predictor runs pose models)")
        activation = self.manifest["saliency"].get("output_activation", "sigmoid")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"{source} declares output activation {activation!r}; this runtime knows "
                              f"{sorted(ACTIVATIONS)}: upgrade lbdeploy")
        self.activation = ACTIVATIONS[activation]
        self.source = source
        self.max_pixels = int(max_pixels)
        spec = self.manifest["input"]
        self.input_name = spec["name"]
        batch, _, height, width = spec["shape"]
        self.input_size = (int(width), int(height))
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.output_name = final_output(self.manifest)["name"]

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Saliency probabilities of images already at the model input size.

        Args:
            images: [N, h, w, 3] uint8 RGB, (w, h) = `input_size`.
        Returns:
            [N, h, w] float32 probabilities (the `Predict` of lbdeploy.evaluation.saliency_eval).
        """
        batch = normalize(images, self.manifest["input"])
        step = self.max_batch or len(batch)
        logits = np.concatenate([self.backend.run({self.input_name: batch[i:i + step]})[self.output_name]
                                 for i in range(0, len(batch), step)])
        return self.activation(logits[:, 0]).astype(np.float32)

    def predict(self, image) -> SaliencyResult:
        """The saliency map of one image.

        Args:
            image: a path, encoded bytes, or an HxWx3 uint8 RGB array.
        Returns:
            SaliencyResult with the map at the image's size.
        Raises:
            InputError: an unreadable or too large image.
        """
        pixels = load_image(image, self.max_pixels)
        prob = self.predict_batch(resize_image(pixels, self.input_size)[None])[0]
        check_deadline()  # a server request past its deadline stops before the map is enlarged to the image
        height, width = pixels.shape[:2]
        return SaliencyResult(resize_probabilities(prob, (height, width)).astype(np.float32), (int(width), int(height)))


class SaliencyPredictorFactory(PredictorRecipe):
    """A picklable recipe for a SaliencyPredictor (servers call it once per process or Ray replica).

    Args: as SaliencyPredictor.
    """

    predictor_class = SaliencyPredictor
