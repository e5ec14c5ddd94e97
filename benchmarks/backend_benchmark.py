"""Training speed of the default model under Keras' TensorFlow and JAX backends
(`make bench-backends`): the same `build_model`, params, batch size and images (the embedded
digits, resized to `base.image_size`, fed from memory), one process per backend.

Prints images per second after the first (compiling) epoch, the device each backend trained
on, and the ratio. A backend that is not installed is reported, not failed: the GPU machines
this project is measured on carry JAX but no TensorFlow.
"""

import argparse
import json
import os
import subprocess
import sys
import time

EPOCHS = 3


def measure() -> dict:
    """Train for EPOCHS epochs under the backend in KERAS_BACKEND; seconds per epoch."""
    import keras
    import numpy as np
    import pandas as pd
    from PIL import Image
    from sklearn.datasets import load_digits

    from pipeline.params import load_params
    from pipeline.training.batching import resolve_batch_size
    from pipeline.training.model import build_model
    from pipeline.training.settings import resolve_input

    params = load_params()
    base, cfg = params.base, params.train
    digits = load_digits()
    scans_shape = pd.DataFrame({"width": [8], "height": [8]})  # base.* auto as for the split
    shape = resolve_input(params, scans_shape, split_channels=1)
    size = shape.image_size
    scans = (digits.images * (255 / 16)).round().astype(np.uint8)
    images = np.stack(
        [
            np.asarray(Image.fromarray(s).resize((size, size), Image.Resampling.BILINEAR))
            for s in scans
        ]
    )[..., None].repeat(shape.channels, axis=-1)
    labels = np.eye(10, dtype=np.float32)[digits.target]

    keras.utils.set_random_seed(base.seed)
    model = build_model(images.shape[1:], 10, cfg.model, cfg.augmentation, base.seed)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    seconds: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds.append(time.perf_counter() - self.start)

    model.fit(
        images,
        labels,
        batch_size=resolve_batch_size(cfg.batch_size, len(images)),
        epochs=EPOCHS,
        callbacks=[Clock()],
        verbose=0,
    )
    return {
        "backend": keras.backend.backend(),
        "device": device_name(keras.backend.backend()),
        "images": len(images),
        "images_per_second": [round(len(images) / s, 1) for s in seconds],
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def device_name(backend: str) -> str:
    if backend == "jax":
        import jax

        return str(jax.devices()[0].platform)
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--measure", action="store_true", help="measure this process' backend")
    parser.add_argument("--backends", default="tensorflow,jax")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure()))
        return

    results = {}
    for backend in args.backends.split(","):
        command = [sys.executable, "-m", "benchmarks.backend_benchmark", "--measure"]
        run = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend}
        )
        if run.returncode != 0:
            print(f"  {backend:10s} not measured: {run.stderr.strip().splitlines()[-1]}")
            continue
        result = results[backend] = json.loads(run.stdout.strip().splitlines()[-1])
        speeds = result["images_per_second"]
        print(
            f"  {backend:10s} on {result['device']}: epoch 1 {speeds[0]:7.1f} img/s, "
            f"later {speeds[-1]:7.1f} img/s ({result['images']} images, {EPOCHS} epochs)"
        )
    if {"tensorflow", "jax"} <= results.keys():
        ratio = (
            results["jax"]["images_per_second"][-1] / results["tensorflow"]["images_per_second"][-1]
        )
        print(f"  jax/tensorflow after the first epoch: {ratio:.2f}")


if __name__ == "__main__":
    main()
