"""The CNN, as one pure function of the input shape, the class count and `train.model`.

Only Keras layers and `keras.ops`: no TensorFlow inside the model, so the same code builds and
trains under Keras' JAX or PyTorch backends too.
"""

import keras
from keras import layers

from pipeline.params import AugmentationParams, ModelParams


def augmentation(cfg: AugmentationParams, seed: int) -> list[layers.Layer]:
    """Random transformations of 0..1 images, active only in training (Keras' layers)."""
    steps: list[layers.Layer] = []
    if cfg.rotation:
        steps.append(layers.RandomRotation(cfg.rotation, fill_mode="nearest", seed=seed))
    if cfg.zoom:
        steps.append(layers.RandomZoom(cfg.zoom, fill_mode="nearest", seed=seed + 1))
    if cfg.translation:
        steps.append(
            layers.RandomTranslation(
                cfg.translation, cfg.translation, fill_mode="nearest", seed=seed + 2
            )
        )
    if cfg.flip != "none":
        steps.append(layers.RandomFlip(cfg.flip, seed=seed + 3))
    if cfg.contrast:
        steps.append(layers.RandomContrast(cfg.contrast, value_range=(0, 1), seed=seed + 4))
    if cfg.erasing:  # a rectangle of 2-33% of the image set to noise (Zhong et al. 2017)
        steps.append(layers.RandomErasing(cfg.erasing, value_range=(0, 1), seed=seed + 5))
    return steps


def build_model(
    input_shape: tuple[int, int, int],
    num_classes: int,
    cfg: ModelParams,
    augment: AugmentationParams | None = None,
    seed: int = 0,
) -> keras.Model:
    """The seed article's CNN family: blocks of convolutions (batch-normalised, with residual
    shortcuts, when asked) each followed by max pooling, then a dense or global-average head.

    Rescaling and augmentation are layers of the model, so the saved model takes a batch of
    uint8 images and carries its own preprocessing.
    """
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)  # also casts to the compute dtype
    for layer in augmentation(augment, seed) if augment else []:
        x = layer(x)
    for block, (filters, convs) in enumerate(zip(cfg.filters, cfg.convs, strict=True), start=1):
        early = cfg.pool == "after_first_conv"
        for conv in range(1, convs + 1):
            shortcut = x
            name = f"block{block}_conv{conv}"
            x = convolution(
                x, filters, cfg, name, pool=f"block{block}_pool" if early and conv == 1 else ""
            )
            if cfg.residual and conv > 1:
                x = layers.Add(name=f"block{block}_add{conv}")([x, shortcut])
        if not early:
            x = layers.MaxPooling2D(cfg.pool_size, name=f"block{block}_pool")(x)
    if cfg.head == "global_average":
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, dense_head(x, cfg.dense_units, cfg.dropout, num_classes), name="cnn")


def convolution(
    x: keras.KerasTensor, filters: int, cfg: ModelParams, name: str, pool: str = ""
) -> keras.KerasTensor:
    """One convolution with its ReLU, batch-normalised in between when asked; with `pool` (the
    pooling layer's name), max pooling right after the convolution, so normalisation and
    activation run on a quarter of the values (conv -> pool -> norm -> act)."""
    if not cfg.batch_norm and not pool:
        return layers.Conv2D(
            filters, cfg.kernel_size, padding=cfg.padding, activation="relu", name=name
        )(x)
    # the bias is redundant before batch normalisation
    bias = not cfg.batch_norm
    x = layers.Conv2D(filters, cfg.kernel_size, padding=cfg.padding, use_bias=bias, name=name)(x)
    if pool:
        x = layers.MaxPooling2D(cfg.pool_size, name=pool)(x)
    if not cfg.batch_norm:
        return layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def dense_head(
    x: keras.KerasTensor, units: list[int], dropout: float, num_classes: int
) -> keras.KerasTensor:
    """Hidden ReLU dense layers, each followed by dropout when asked, then the softmax."""
    for index, width in enumerate(units, start=1):
        x = layers.Dense(width, activation="relu", name=f"dense{index}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout{index}")(x)
    # float32 output even under a mixed-precision policy, so probabilities stay exact.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
