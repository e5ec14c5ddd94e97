"""training.devices: the precision policy resolved for this machine, set for the models."""

import keras

from pipeline.params import load_params
from pipeline.training import devices
from pipeline.training.settings import resolve_precision


def test_the_resolved_policy_is_set_and_described_on_a_cpu(monkeypatch):
    cfg = load_params().train.device
    gpus = devices.visible_gpus(cfg.memory_growth)
    assert gpus == 0  # the tests run without one
    try:
        setup = devices.configure_devices(*resolve_precision(cfg, gpus, "none", bf16=True), gpus)
        assert (setup.precision, setup.jit_compile) == ("mixed_bfloat16", False)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert setup.device.startswith("CPU")
        assert devices.configure_devices("float32", True, 0) == devices.DeviceSetup(
            setup.device, "float32", True
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
