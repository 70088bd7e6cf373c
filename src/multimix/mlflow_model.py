"""The code of multimix's MLflow model ("models from code": MLflow copies this file into each
logged model and runs it on load, so no network or Python object is pickled). The model itself
is `multimix.serving.MultimixModel`."""

import mlflow.models

from multimix.serving import MultimixModel

mlflow.models.set_model(MultimixModel())
