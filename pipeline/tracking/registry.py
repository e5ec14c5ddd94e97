"""The model registry side of MLflow: log and register the trained model as the pipeline's
pyfunc model, and load a logged model back by URI."""

import base64
import importlib.metadata
import logging
from pathlib import Path

import keras
import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array

from pipeline.contracts import Labels, read_labels
from pipeline.paths import MODEL_LABELS_FILE, ROOT
from pipeline.serving.inference import ModelNotFoundError
from pipeline.serving.pyfunc import COLUMN, PIXELS
from pipeline.tracking import store

PACKAGE_DATA = ("model_code.py",)  # the served model as code: read, never imported here
MODEL_CODE = Path(__file__).with_name(PACKAGE_DATA[0])

PACKAGES = ("mlflow", "tensorflow", "keras", "pillow", "pandas", "numpy")


def signature(classes: list[str]) -> ModelSignature:
    """Base64 image files or uint8 arrays in (either column); class and probabilities out."""
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", COLUMN, required=False),
                ColSpec(Array(Array(Array("long"))), PIXELS, required=False),
            ]
        ),
        outputs=Schema(
            [ColSpec("string", "class"), ColSpec("double", "confidence")]
            + [ColSpec("double", f"p_{c}") for c in classes]
        ),
    )


def requirements() -> list[str]:
    return [f"{p}=={importlib.metadata.version(p)}" for p in PACKAGES]


def model_files(model_file: Path, labels_file: Path) -> dict:
    """What the pyfunc model is made of, logged or saved: its definition as code (no pickle:
    `tracking.model_code`), the two files, the pipeline's code (so it loads anywhere), the
    signature and the pinned requirements."""
    return {
        "python_model": str(MODEL_CODE),
        "artifacts": {"model": str(model_file), "labels": str(labels_file)},
        "code_paths": [str(ROOT / "pipeline")],
        "signature": signature(read_labels(labels_file, writer="train").classes),
        # given, not inferred: inference reloads the model in a subprocess
        "pip_requirements": requirements(),
    }


def save_model(path: Path, model_file: Path, labels_file: Path) -> Path:
    """The pyfunc model in a local folder, without a tracking store (benchmarks, tests)."""
    mlflow.pyfunc.save_model(str(path), **model_files(model_file, labels_file))
    return path


def log_model(model_file: Path, labels_file: Path, example: bytes, registered_name: str):
    """Log the pyfunc model (with the pipeline's code, so it loads anywhere) to the active run
    and register it under `registered_name`."""
    # The requirements are given, so MLflow's notes on how it would have guessed them are noise.
    for name in ("mlflow.utils.uv_utils", "mlflow.utils.environment", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return mlflow.pyfunc.log_model(
        name="model",
        input_example=pd.DataFrame({COLUMN: [base64.b64encode(example).decode("ascii")]}),
        registered_model_name=registered_name,
        **model_files(model_file, labels_file),
    )


def load_logged_model(uri: str, labels: bool = True) -> tuple[keras.Model, Labels | None]:
    """The Keras model behind an MLflow model URI and (`labels`) its class names: from the
    pipeline's pyfunc model, or for a Keras-flavor model from its run's `models/labels.json`."""
    store.configure()
    try:
        info = mlflow.models.get_model_info(uri)
        if "keras" not in info.flavors:  # the pipeline's pyfunc model holds both files
            classifier = mlflow.pyfunc.load_model(uri).unwrap_python_model().classifier
            found = classifier.labels
            return classifier.model, found
        model = mlflow.keras.load_model(uri)
        if not labels:
            return model, None
        local = mlflow.artifacts.download_artifacts(
            run_id=info.run_id, artifact_path=MODEL_LABELS_FILE.relative_to(ROOT).as_posix()
        )
    except mlflow.exceptions.MlflowException as error:
        raise ModelNotFoundError(f"no model at {uri} ({error.message})") from error
    return model, read_labels(Path(local), writer="train")
