"""The device training runs on: memory growth, precision policy and XLA, each resolved from
`auto` for this machine."""

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from pipeline import CUDA_INIT_FAILED, native_stderr
from pipeline.params import DeviceParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSetup:
    device: str
    precision: str
    jit_compile: bool


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16), where it beats float32."""
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


# bases built of depthwise convolutions, which oneDNN runs slower in bfloat16 than in float32
# on a CPU (EfficientNet-Lite0 at 224 px, 2 cores: 37 against 64 images/s with the base frozen)
DEPTHWISE_BASES = ("efficientnet_lite0", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3_small")


def configure_devices(cfg: DeviceParams, base: str = "none") -> DeviceSetup:
    """Memory growth, precision policy and XLA, each resolved from `auto` for this machine
    and the model (`base`: train.transfer.base, resolved): mixed_float16 on a GPU;
    mixed_bfloat16 on a CPU that computes it natively, unless the base is one of
    DEPTHWISE_BASES; else float32."""
    with native_stderr(CUDA_INIT_FAILED) as dropped:
        gpus = tf.config.list_physical_devices("GPU")
    if dropped:  # a CUDA build of TensorFlow without a usable driver: one line, not an E0000
        reason = CUDA_INIT_FAILED.search(dropped[0]).group("reason").decode(errors="replace")
        log.info(f"no usable GPU (CUDA: {reason.strip()}); training on the CPU")
    if gpus and cfg.memory_growth != "off":
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    precision = cfg.mixed_precision
    if precision == "auto":
        bf16 = cpu_has_bf16() and base not in DEPTHWISE_BASES
        precision = "mixed_float16" if gpus else "mixed_bfloat16" if bf16 else "float32"
    keras.mixed_precision.set_global_policy(precision)
    jit = bool(gpus) if cfg.jit_compile == "auto" else cfg.jit_compile == "on"
    device = f"GPU x{len(gpus)}" if gpus else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return DeviceSetup(device, precision, jit)
