"""training.devices: precision and XLA resolved from `auto` on this machine."""

import keras

from pipeline.params import load_params
from pipeline.training import devices


def test_auto_device_policy_on_a_cpu(monkeypatch):
    cfg = load_params().train.device
    try:
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
        setup = devices.configure_devices(cfg)
        assert (setup.precision, setup.jit_compile) == ("mixed_bfloat16", False)
        assert setup.device.startswith("CPU")
        # a base of depthwise convolutions runs faster in float32 there; VGG keeps bfloat16
        assert devices.configure_devices(cfg, "efficientnet_lite0").precision == "float32"
        assert devices.configure_devices(cfg, "vgg16").precision == "mixed_bfloat16"
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
        assert devices.configure_devices(cfg).precision == "float32"
        forced = cfg.model_copy(update={"mixed_precision": "float32", "jit_compile": "on"})
        assert devices.configure_devices(forced) == devices.DeviceSetup(
            setup.device, "float32", True
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
