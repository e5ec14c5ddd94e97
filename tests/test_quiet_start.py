import subprocess
import sys

from pipeline.common import native


def test_tensorflow_starts_without_its_log_wall():
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pipeline.train, tensorflow as tf; print(tf.__name__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == "tensorflow"
    assert "absl::InitializeLog" not in run.stderr
    assert "I0000" not in run.stderr


def test_only_start_up_notices_count_as_noise():
    notices = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"I0000 00:00:1795565436.133604    6908 port.cc:153] oneDNN custom operations are on.",
        b"I0000 00:00:1795565436.133955    6908 cudart_stub.cc:31] Could not find cuda drivers",
        b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild",
        b"E0000 00:00:1795566704.642254   10366 node_def_util.cc:682] NodeDef mentions attribute "
        b"use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset;",
    ]
    real = [
        b"E0000 00:00:1795565436.133955    6908 cuda_driver.cc:12] failed call to cuInit",
        b"I0000 00:00:1795565436.133955    6908 gpu_device.cc:2022] Created device /GPU:0",
        b"Traceback (most recent call last):",
    ]
    assert all(native.NOISE.search(line) for line in notices)
    assert not any(native.NOISE.search(line) for line in real)


def test_a_missing_cuda_driver_is_reported_in_one_line():
    line = (
        b"E0000 00:00:1795566572.845823   10023 cuda_platform.cc:52] failed call to cuInit: "
        b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
    )
    found = native.CUDA_INIT_FAILED.search(line)
    assert (
        found["reason"].strip()
        == b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"
    )


def test_native_stderr_keeps_real_errors_and_drops_notices(capfd):
    import os

    with native.native_stderr() as dropped:
        os.write(2, b"I0000 00:00:1.2    7 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1.2    7 gpu.cc:9] a real failure\n")
    assert capfd.readouterr().err == "E0000 00:00:1.2    7 gpu.cc:9] a real failure\n"
    assert len(dropped) == 1
