"""Image-classification pipeline: one module per DVC stage plus shared, role-named modules."""

import os

# TensorFlow's C++ start-up chatter (CPU instruction sets, missing CUDA) is noise in stage logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
