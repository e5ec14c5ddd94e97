"""A Keras model's computation in float32: what the converters take (`serving.formats`) and
what the NumPy forward pass and Grad-CAM are compared with (`evaluation`)."""

import keras


def float32_copy(model: keras.Model) -> keras.Model:
    """The model with every mixed-precision layer computing in float32 and the same weights
    (mixed precision keeps float32 weights, so nothing is lost): the exact computation the
    NumPy pass is compared with. A float32 model is returned as it is."""
    if not any(layer.dtype_policy.name.startswith("mixed") for layer in model.layers):
        return model

    def exact(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and node["config"]["name"].startswith(
                "mixed"
            ):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: exact(value) for key, value in node.items()}
        return [exact(value) for value in node] if isinstance(node, list) else node

    copy = keras.Model.from_config(exact(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy
