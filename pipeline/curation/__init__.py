"""Data health: out-of-sample probabilities, label issues and image checks (stage audit)."""
