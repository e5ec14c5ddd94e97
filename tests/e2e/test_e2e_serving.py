"""`make serve`: the champion model over HTTP (MLflow's scoring app, the body bounded)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from pipeline.common.processes import free_port, wait_for_http

pytestmark = pytest.mark.slow


def test_the_champion_is_served_over_http_and_bad_requests_get_a_readable_4xx(project, tmp_path):
    """`make serve`'s command: the real scoring server, real images, answers equal to the
    predictions file; requests it cannot answer get 400 with the reason, and it keeps serving."""
    import base64
    import os
    import signal
    import urllib.error
    import urllib.request

    import numpy as np

    from pipeline.imagedata.dataset import decode_image

    root, env = project
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.tracking.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-uri",
            "models:/image-classifier-digits@champion",
            "--max-request-mb",
            "40",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def post(body: bytes) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def pixels(*arrays) -> bytes:
        data = [[np.asarray(a).tolist()] for a in arrays]
        return json.dumps({"dataframe_split": {"columns": ["pixels"], "data": data}}).encode()

    def images(*payloads: bytes, column: str = "image") -> bytes:
        data = [[base64.b64encode(p).decode("ascii")] for p in payloads]
        return json.dumps({"dataframe_split": {"columns": [column], "data": data}}).encode()

    try:
        try:
            wait_for_http(f"{url}/ping", server, seconds=240)
        except (RuntimeError, TimeoutError) as error:
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from error
        expected = pd.read_csv(root / "reports/evaluate/predictions.csv", dtype=str).head(40)
        files = [(root / "data/split" / p).read_bytes() for p in expected["path"]]
        status, body = post(images(*files))
        assert status == 200, body
        answers = json.loads(body)["predictions"]
        assert [a["class"] for a in answers] == expected["predicted_label"].tolist()
        # as evaluate wrote them, to the sixth decimal give or take its last digit (another
        # batch, so oneDNN may sum in another order)
        confidence = np.array([a["confidence"] for a in answers])
        assert np.abs(confidence - expected["confidence"].astype(float)).max() <= 1.5e-6

        # uint8 arrays at the model's size (16x16, grey as the digits are), as nested lists:
        # the same answers
        decoded = [
            decode_image(str(root / "data/split" / p), 16, 1).numpy() for p in expected["path"][:8]
        ]
        status, body = post(pixels(*decoded))
        assert status == 200, body
        assert [a["class"] for a in json.loads(body)["predictions"]] == (
            expected["predicted_label"].tolist()[:8]
        )

        for request, message in (
            (images(b"just some text"), "row 0: not an image (no known image format)"),
            (images(files[0], b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "row 1: not an image"),
            (images(os.urandom(21 * 1024 * 1024)), "row 0: the image has 22,020,096 bytes"),
            # over the body's bound: 413 before MLflow reads it
            (images(os.urandom(34 * 1024 * 1024)), "bytes; at most 41,943,040 are taken"),
            (images(files[0], column="img"), "expected one column: 'image'"),
            (pixels(np.zeros((8, 8, 3), np.uint8)), "row 0: an array of shape (8, 8, 3)"),
            (pixels(np.full((16, 16, 1), 300)), "row 0: values outside 0-255"),
            (b"", ""),
            (b"{not json", ""),
        ):
            status, body = post(request)
            assert 400 <= status < 500, (status, body[:300])
            assert message in body, body[:500]
        status, body = post(images(files[1]))  # still serving
        assert (
            status == 200
            and json.loads(body)["predictions"][0]["class"] == (expected["predicted_label"].iloc[1])
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
