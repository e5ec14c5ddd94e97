"""tracking.registry: the pyfunc model is stored as code (models-from-code), so saving and
loading it involves no pickle, and what loads answers as the model does."""

import base64
import io

import keras
import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.contracts import Labels, write_labels
from pipeline.tracking import registry


def test_the_saved_pyfunc_model_holds_no_pickle_and_loads_from_its_code(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.save(tmp_path / "model.keras")
    write_labels(tmp_path / "labels.json", Labels(["cat", "dog"]))
    folder = registry.save_model(
        tmp_path / "pyfunc", tmp_path / "model.keras", tmp_path / "labels.json"
    )
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    assert "model_code_path" in (folder / "MLmodel").read_text()
    image = io.BytesIO()
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(image, "PNG")
    request = pd.DataFrame({"image": [base64.b64encode(image.getvalue()).decode("ascii")]})
    answer = mlflow.pyfunc.load_model(str(folder)).predict(request)
    expected = model.predict(np.full((1, 8, 8, 1), 200, dtype=np.uint8), verbose=0)[0]
    np.testing.assert_allclose(answer[["p_cat", "p_dog"]].to_numpy()[0], expected, rtol=1e-6)
