"""The CNN, as one pure function of the input shape, the class count and `train.model`."""

import keras
from keras import layers

from pipeline.params import ModelParams


def build_model(
    input_shape: tuple[int, int, int], num_classes: int, cfg: ModelParams
) -> keras.Model:
    """The seed article's CNN: blocks of convolutions and max pooling, then a dense head.

    Rescaling is a layer of the model, so the saved model takes raw 0..255 pixels.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for block, filters in enumerate(cfg.filters, start=1):
        for conv in range(1, cfg.convs_per_block + 1):
            x = layers.Conv2D(
                filters,
                cfg.kernel_size,
                padding=cfg.padding,
                activation="relu",
                name=f"block{block}_conv{conv}",
            )(x)
        x = layers.MaxPooling2D(cfg.pool_size, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(cfg.dense_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"dense{index}")(x)
    # float32 output even under a mixed-precision policy, so probabilities stay exact.
    outputs = layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name="cnn")
