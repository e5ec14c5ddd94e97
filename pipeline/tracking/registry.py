"""The model registry side of MLflow: log and register the trained model as the pipeline's
pyfunc model, and load a logged model back by URI (the one place that does: serving loads
files only, and training takes a URI's model as a local file, `local_transfer_weights`)."""

import base64
import importlib.metadata
import logging
import re
import shutil
from pathlib import Path

import keras
import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array

from pipeline.contracts import Labels, read_labels
from pipeline.params import Params
from pipeline.paths import MODEL_LABELS_FILE, MODELS_CACHE_DIR, ROOT
from pipeline.serving import inference
from pipeline.serving.inference import Classifier, ModelNotFoundError
from pipeline.serving.pyfunc import COLUMN, PIXELS
from pipeline.tracking import store

PACKAGE_DATA = ("model_code.py",)  # the served model as code: read, never imported here
MODEL_CODE = Path(__file__).with_name(PACKAGE_DATA[0])

MODEL_URI = re.compile(r"[a-z][a-z0-9+.-]*:/")  # runs:/..., models:/..., s3://...

PACKAGES = ("mlflow", "tensorflow", "keras", "pillow", "pandas", "numpy")


def is_model_uri(source: str | Path) -> bool:
    return isinstance(source, str) and bool(MODEL_URI.match(source))


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


def load_logged_model(uri: str) -> tuple[keras.Model, Labels]:
    """The Keras model behind an MLflow model URI and its class names: from the pipeline's
    pyfunc model, or for a Keras-flavor model from its run's `models/labels.json`."""
    store.configure()
    try:
        info = mlflow.models.get_model_info(uri)
        if "keras" not in info.flavors:  # the pipeline's pyfunc model holds both files
            classifier = mlflow.pyfunc.load_model(uri).unwrap_python_model().classifier
            found = classifier.labels
            return classifier.model, found
        model = mlflow.keras.load_model(uri)
        local = mlflow.artifacts.download_artifacts(
            run_id=info.run_id, artifact_path=MODEL_LABELS_FILE.relative_to(ROOT).as_posix()
        )
    except mlflow.exceptions.MlflowException as error:
        raise ModelNotFoundError(f"no model at {uri} ({error.message})") from error
    return model, read_labels(Path(local), writer="train")


def load_classifier(source: str | Path) -> Classifier:
    """An MLflow model URI (`runs:/<id>/model`, `models:/<name>/<version>`,
    `models:/<name>@champion`: the pipeline's pyfunc model, or a Keras-flavor model whose run
    holds `models/labels.json`), or the files `serving.inference.load_classifier` reads."""
    if is_model_uri(source):
        model, labels = load_logged_model(str(source))
        return Classifier.from_labels(model, labels)
    return inference.load_classifier(source)


def local_model_file(uri: str) -> Path:
    """The `.keras` file of the model at an MLflow URI (the pipeline's pyfunc model holds one,
    a Keras-flavor model is one), downloaded under MODELS_CACHE_DIR, one folder per URI, so the
    same URI is the same file. Nothing is loaded: TensorFlow stays untouched until the devices
    and the strategy are set."""
    store.configure()
    folder = MODELS_CACHE_DIR / re.sub(r"[^A-Za-z0-9._@-]+", "_", uri)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
    except mlflow.exceptions.MlflowException as error:
        raise ModelNotFoundError(f"no model at {uri} ({error.message})") from error
    found = sorted(local.rglob("*.keras"))
    if len(found) != 1:
        raise ModelNotFoundError(
            f"{uri} holds {len(found)} .keras files, not one: not a model of this pipeline"
        )
    return found[0]


def local_transfer_weights(params: Params) -> Params:
    """`params` with train.transfer.weights, when it is an MLflow model URI, pointing at that
    model's local copy (`local_model_file`): training reads model files only."""
    transfer = params.train.transfer
    if transfer.base != "pipeline" or not is_model_uri(transfer.weights):
        return params
    try:
        local = local_model_file(transfer.weights)
    except ModelNotFoundError as error:
        raise ModelNotFoundError(
            f"train.transfer.weights: cannot load the MLflow model {transfer.weights}: {error}"
        ) from None
    weights = transfer.model_copy(update={"weights": str(local)})
    train = params.train.model_copy(update={"transfer": weights})
    return params.model_copy(update={"train": train})
