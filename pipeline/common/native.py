"""What TensorFlow's native code writes to stderr: the start-up notices dropped, a real error
kept (`native_stderr`), and TensorFlow's first import wrapped so (`quiet_tensorflow`, which
importing the `pipeline` package calls)."""

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# Lines TensorFlow writes through absl before its logging is set up, which no log level can
# silence: the absl notice itself, oneDNN's and the CUDA stub's notes, CPU instruction sets.
NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|I0000 \S+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\]"
    rb"|To enable the following instructions:"
    # tf.data's graph rewrite naming an attribute its own op does not declare (TF 2.21), harmless
    rb"|node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool"
)

# What TensorFlow's CUDA build prints when it finds no driver (every CPU-only machine).
CUDA_INIT_FAILED = re.compile(rb"cuda_platform\.cc:\d+\] failed call to cuInit: (?P<reason>.*)")


@contextmanager
def native_stderr(noise: re.Pattern[bytes] = NOISE) -> Iterator[list[bytes]]:
    """Capture what C++ code writes to file descriptor 2 (redirecting Python's `sys.stderr`
    cannot), then write back every line `noise` does not match. The dropped lines are left in
    the yielded list, for the caller to report in its own words."""
    dropped: list[bytes] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield dropped
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().splitlines(keepends=True):
                if noise.search(line):
                    dropped.append(line)
                else:
                    os.write(2, line)


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's import inside `native_stderr`: start-up notices dropped, a real error
    still shows."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with native_stderr():
            self.loader.exec_module(module)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Wraps the first import of `tensorflow` (directly or through Keras) in `_QuietLoader`;
    stages that never import TensorFlow pay nothing."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Wrap TensorFlow's first import in `native_stderr` (nothing to do once it is imported)."""
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietTensorFlow) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlow())
