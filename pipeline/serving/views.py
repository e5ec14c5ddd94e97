"""Test-time views: a model's probabilities averaged over a few transformations of each image.

- flip: the image and its left-right mirror (for data trained with horizontal flips);
- shift: the image and its four one-pixel shifts, edges repeated (what training's translation
  teaches the model to expect);
- flip_shift: both, ten views.

`train.test_time_views` makes them part of the deployed model: `with_views` wraps the trained
network in a model that averages over them, which evaluate scores, predict and the served
model answer with, and every export carries (its parity is checked with them). `evaluate.tta`
averages further views on top, reported beside the headline. Keras operations only, so the
views run in a `tf.data` pipeline, inside a Keras model and in every exported format.
"""

from collections.abc import Callable

import keras

from pipeline.contracts import VIEW_KINDS as KINDS

SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # (down, right) in pixels


def _moved(images, step: int, axis: int):
    """`images` (a batch) moved `step` (+1 or -1) pixels along `axis`, the edge repeated."""
    size = images.shape[axis]
    if step > 0:
        kept, edge = slice(0, size - 1), slice(0, 1)
        parts = (edge, kept)
    else:
        kept, edge = slice(1, size), slice(size - 1, size)
        parts = (kept, edge)
    index = [slice(None)] * len(images.shape)
    pieces = []
    for part in parts:
        index[axis] = part
        pieces.append(images[tuple(index)])
    return keras.ops.concatenate(pieces, axis=axis)


def shift(dy: int, dx: int) -> Callable:
    """The view that moves a batch `dy` pixels down and `dx` right, edges repeated."""

    def view(images):
        if dy:
            images = _moved(images, dy, 1)
        if dx:
            images = _moved(images, dx, 2)
        return images

    return view


def mirror(images):
    """A batch's left-right mirror."""
    return keras.ops.flip(images, axis=2)


def views(kind: str) -> list[Callable]:
    """The transformations of a batch that `kind` averages over, the identity first."""
    if kind not in KINDS:
        raise ValueError(f"unknown test-time views {kind!r}: one of {', '.join(KINDS)}")
    shifts = [shift(dy, dx) for dy, dx in SHIFTS]
    extra = {
        "none": [],
        "flip": [mirror],
        "shift": shifts,
        "flip_shift": [mirror, *shifts, *[lambda x, s=s: s(mirror(x)) for s in shifts]],
    }[kind]
    return [lambda x: x, *extra]


def with_views(model: keras.Model, kind: str) -> keras.Model:
    """`model` answering with its probabilities averaged over the views of `kind` (the model
    itself for none). The network's own layers and weights are shared, not copied."""
    if kind == "none":
        return model
    image = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")
    outputs = [model(view(image)) for view in views(kind)]
    averaged = keras.layers.Average(name="test_time_views", dtype="float32")(outputs)
    return keras.Model(image, averaged, name=f"{model.name}_{kind}")
