"""Measuring the trained model: the test tables and metrics, the NumPy forward pass, and the
look inside the CNN."""
