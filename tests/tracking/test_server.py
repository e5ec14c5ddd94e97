"""tracking.server: MLflow's scoring app with each request's body bounded, on a real port."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import keras
import numpy as np
from PIL import Image

from pipeline.common.processes import free_port, wait_for_http
from pipeline.contracts import Labels, write_labels
from pipeline.paths import ROOT
from pipeline.tracking import registry


def _post(url: str, body: bytes, length: bool = True) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    if not length:  # a chunked body: no Content-Length
        request = urllib.request.Request(
            url,
            data=iter([body]),
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_body_over_the_bound_is_refused_unkept_and_the_server_goes_on(tmp_path):
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(tmp_path / "m.keras")
    write_labels(tmp_path / "labels.json", Labels(["cat", "dog"]))
    folder = registry.save_model(
        tmp_path / "pyfunc", tmp_path / "m.keras", tmp_path / "labels.json"
    )
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.tracking.server",
            "--model-uri",
            str(folder),
            "--port",
            str(port),
            "--max-request-mb",
            "0.01",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", server, seconds=120)
        image = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(image, "PNG")
        small = json.dumps(
            {
                "dataframe_split": {
                    "columns": ["image"],
                    "data": [[base64.b64encode(image.getvalue()).decode()]],
                }
            }
        ).encode()
        status, body = _post(f"{url}/invocations", small)
        assert status == 200 and json.loads(body)["predictions"][0]["class"] in ("cat", "dog")
        status, body = _post(f"{url}/invocations", b"x" * 20_000)
        assert status == 413, body
        assert json.loads(body)["message"] == (
            "the request body has 20000 bytes; at most 10,485 are taken"
        )
        status, body = _post(f"{url}/invocations", small, length=False)
        assert status == 411, body
        assert _post(f"{url}/invocations", small)[0] == 200  # still serving
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
