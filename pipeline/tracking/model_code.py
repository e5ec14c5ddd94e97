"""The served model as code (MLflow's models-from-code): MLflow stores this file with the
pipeline's code and runs it to load the model, so loading a registered model, a run's model
or a saved one unpickles nothing. `tracking.registry` logs it."""

import mlflow

from pipeline.serving.pyfunc import ImageClassifierModel

mlflow.models.set_model(ImageClassifierModel())
