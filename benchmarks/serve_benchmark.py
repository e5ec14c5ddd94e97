"""How fast the trained model classifies new images (`make bench-serve`), side by side in one
run on the same model and the same test images:

- compute bound: the Keras model on uint8 arrays already in memory (batch 64);
- CLI: `python -m pipeline.tools.predict` on the test split's files, the folder given
  `--repeat` times (decoding and conversion included; its own count, after the model's start-up),
  and the whole command's wall time; then the same with each export (`--format`, models/export/);
- HTTP: `mlflow models serve` (local environment, 127.0.0.1), base64 JSON requests of
  batch 1 and batch 64, one client at a time.

Prints images per second and each figure's ratio to the compute bound.
"""

import argparse
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from pipeline.common.processes import free_port, wait_for_http
from pipeline.paths import EXPORT_DIR, MODEL_FILE, MODEL_LABELS_FILE, ROOT, SPLIT_DIR
from pipeline.serving.formats import FILES


def compute_bound(files: list[Path], repeats: int) -> float:
    from pipeline.serving.inference import Classifier

    classifier = Classifier.from_files(MODEL_FILE, MODEL_LABELS_FILE)
    pixels = np.stack([classifier.pixels(f.read_bytes()) for f in files[:64]])
    classifier.probabilities(pixels)  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        classifier.probabilities(pixels)
    return repeats * len(pixels) / (time.perf_counter() - start)


def cli(folder: Path, repeat: int, fmt: str = "keras") -> tuple[float, float, int]:
    """The CLI's own images per second, and images per second over the whole command."""
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        output = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.tools.predict",
                *[str(folder)] * repeat,
                "--format",
                fmt,
                "--out",
                str(Path(scratch) / "p.csv"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        wall = time.perf_counter() - start
    found = re.search(r"(\d+) images classified in ([\d.]+) s", output)
    count, seconds = int(found[1]), float(found[2])
    return count / seconds, count / wall, count


def http(model: Path, files: list[Path], batch: int, requests: int) -> float:
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-uri",
            str(model),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", server, seconds=240)
        encoded = [base64.b64encode(f.read_bytes()).decode("ascii") for f in files]
        bodies = [
            json.dumps(
                {
                    "dataframe_split": {
                        "columns": ["image"],
                        "data": [[encoded[(i * batch + j) % len(encoded)]] for j in range(batch)],
                    }
                }
            ).encode()
            for i in range(requests)
        ]

        def post(body: bytes) -> None:
            request = urllib.request.Request(
                f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()

        post(bodies[0])  # warm up
        start = time.perf_counter()
        for body in bodies:
            post(body)
        return requests * batch / (time.perf_counter() - start)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def local_pyfunc_model(folder: Path) -> Path:
    """The trained model saved as the pipeline's pyfunc model, without a tracking store."""
    from pipeline.tracking import registry

    return registry.save_model(folder / "model", MODEL_FILE, MODEL_LABELS_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="HTTP requests of batch 1")
    parser.add_argument("--repeat", type=int, default=20, help="times the CLI reads the test split")
    args = parser.parse_args()
    if not MODEL_FILE.exists():
        sys.exit(f"{MODEL_FILE} is missing: run `make run` first")
    folder = SPLIT_DIR / "test"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rows = [("compute bound (Keras, uint8 in memory, batch 64)", compute_bound(files, 20))]
    own, whole, count = cli(folder, args.repeat)
    rows += [
        (f"CLI, {count} files (decode + convert + predict)", own),
        ("CLI, whole command (with Python and TensorFlow start)", whole),
    ]
    for fmt in [f for f in FILES if (EXPORT_DIR / FILES[f]).exists()]:
        rows.append((f"CLI --format {fmt}", cli(folder, args.repeat, fmt)[0]))
    with tempfile.TemporaryDirectory() as scratch:
        model = local_pyfunc_model(Path(scratch))
        batch_64 = http(model, files, 64, max(args.requests // 20, 5))
        rows += [
            (
                "HTTP batch 1 (mlflow models serve, base64 JSON)",
                http(model, files, 1, args.requests),
            ),
            ("HTTP batch 64", batch_64),
        ]
    bound = rows[0][1]
    print(f"\nserving speed on {os.cpu_count()} CPU cores, model {MODEL_FILE.relative_to(ROOT)}")
    print(f"{'':58}{'images/s':>10}{'of bound':>10}")
    for name, speed in rows:
        print(f"{name:58}{speed:10.0f}{speed / bound:10.2f}")


if __name__ == "__main__":
    main()
