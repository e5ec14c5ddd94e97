"""Image-classification pipeline: one module per DVC stage at the top (`python -m
pipeline.<stage>`), and role-named packages below them (docs/layout.md).

Importing the package quiets TensorFlow's start-up chatter (`common.native`)."""

import os

from pipeline.common.native import quiet_tensorflow

# TensorFlow's C++ start-up chatter (CPU instruction sets, missing CUDA) is noise in stage logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
quiet_tensorflow()
