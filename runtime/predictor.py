"""The predictors, by task: `open_predictor` builds the one a model's task needs.

    from lbdeploy.runtime.predictor import Predictor, open_predictor
    result = Predictor("out/").predict("person.jpg", flip=True)    # pose (runtime/tasks/pose.py)
    predictor = open_predictor("any-artifact/")                    # pose, saliency or classification

Each task's predictor lives in its runtime module (runtime/tasks/); this module names them for
the library's users.
"""

from lbdeploy.runtime.tasks import open_predictor
from lbdeploy.runtime.tasks.classification import ClassificationPredictor, ClassificationResult
from lbdeploy.runtime.tasks.pose import PoseResult, Predictor, PredictorFactory
from lbdeploy.runtime.tasks.saliency import SaliencyPredictor, SaliencyPredictorFactory, SaliencyResult

__all__ = ["ClassificationPredictor", "ClassificationResult", "PoseResult", "Predictor", "PredictorFactory",
           "SaliencyPredictor", "SaliencyPredictorFactory", "SaliencyResult", "open_predictor"]
