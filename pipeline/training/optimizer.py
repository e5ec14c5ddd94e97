"""The optimizer and its learning-rate schedule, from `train.optimizer`.

Keras only, no TensorFlow: the same optimizer trains under Keras' JAX backend
(`make bench-gpu`).
"""

import keras

from pipeline.params import OptimizerParams

NO_WEIGHT_DECAY = ["bias", "gamma", "beta"]  # biases and batch-norm parameters (variable names)


def make_optimizer(
    cfg: OptimizerParams, steps_per_epoch: int, epochs: int
) -> keras.optimizers.Optimizer:
    """Adam, or AdamW when `weight_decay` is set, at the schedule's learning rate, averaging
    the weights when `ema_momentum` is set; the seed article's per-step decay
    (InverseTimeDecay) is one of the schedules. `epochs`: those the schedule spans."""
    total = max(steps_per_epoch * epochs, 1)
    if cfg.schedule == "inverse_time":
        rate = keras.optimizers.schedules.InverseTimeDecay(
            cfg.learning_rate, decay_steps=cfg.decay_steps, decay_rate=cfg.decay_rate
        )
    elif cfg.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    elif cfg.schedule == "warmup_cosine":
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
        rate = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate / 10,
            decay_steps=total - warmup,
            warmup_target=cfg.learning_rate,
            warmup_steps=warmup,
        )
    else:  # constant, or plateau (a callback lowers it)
        rate = cfg.learning_rate
    ema = {"use_ema": bool(cfg.ema_momentum), "ema_momentum": cfg.ema_momentum or 0.99}
    if not cfg.weight_decay:
        return keras.optimizers.Adam(learning_rate=rate, **ema)
    optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=cfg.weight_decay, **ema)
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer
