"""One registry of architectures, chosen by name (`--arch`), for teachers and students alike.

    from models.registry import build_model
    model = build_model("unet", (128, 128, 1), base_filters=4, depth=4, upsample="transpose", name="unet4")

The contract every builder honours: input (H, W, 1) in [0, 1] -> ... -> a linear 1x1 conv named
`logits` -> sigmoid output; registered layers only (reloads with safe_mode=True); builtin TFLite ops
only. To add an architecture: write `build_<name>(input_shape, base_filters, depth, upsample, name)`
in its own module under models/, add it to ARCHITECTURES, and add it to tests/test_models.py.
"""

from __future__ import annotations

import keras

from models.unet import build_unet

ARCHITECTURES = {"unet": build_unet}


def arch_names() -> list[str]:
    return sorted(ARCHITECTURES)


def build_model(arch: str, input_shape, base_filters: int, depth: int, upsample: str = "transpose", name: str | None = None) -> keras.Model:
    """Build architecture `arch`; a ValueError names the valid architectures."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(arch_names())}")
    return ARCHITECTURES[arch](input_shape, base_filters, depth, upsample=upsample, name=name or f"{arch}{base_filters}")


def logits_model(model: keras.Model, name: str | None = None) -> keras.Model:
    """Sub-model sharing weights: model input -> its `logits` layer output."""
    try:
        logits = model.get_layer("logits").output
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named 'logits'") from None
    return keras.Model(model.inputs[0], logits, name=name or f"{model.name}_logits")


def float32_copy(model: keras.Model) -> keras.Model:
    """The same architecture and weights with every layer in float32: what is saved and exported after a
    mixed-precision run (the variables are float32 already; only the compute dtype changes)."""
    config = model.get_config()
    for layer in config["layers"]:
        if "dtype" in layer.get("config", {}):
            layer["config"]["dtype"] = "float32"
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy
