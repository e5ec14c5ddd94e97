"""Fitting a model: the CNN, transfer-learning bases, the schedule of phases, callbacks that
survive a kill, resuming, devices and distribution strategies."""
