"""The device training runs on: its GPUs (memory growth), and the precision policy and XLA
that `training.settings` resolved for it."""

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from pipeline.common.native import CUDA_INIT_FAILED, native_stderr

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


def visible_gpus(memory_growth: str) -> int:
    """How many GPUs TensorFlow sees, each set to grow its memory (train.device.memory_growth);
    call before anything touches a GPU."""
    with native_stderr(CUDA_INIT_FAILED) as dropped:
        gpus = tf.config.list_physical_devices("GPU")
    if dropped:  # a CUDA build of TensorFlow without a usable driver: one line, not an E0000
        reason = CUDA_INIT_FAILED.search(dropped[0]).group("reason").decode(errors="replace")
        log.info(f"no usable GPU (CUDA: {reason.strip()}); training on the CPU")
    if gpus and memory_growth != "off":
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    return len(gpus)


def configure_devices(precision: str, jit_compile: bool, gpus: int) -> DeviceSetup:
    """The precision policy (resolved: `training.settings.resolve_precision`) set for every
    model built from here on."""
    keras.mixed_precision.set_global_policy(precision)
    device = f"GPU x{gpus}" if gpus else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return DeviceSetup(device, precision, jit_compile)
