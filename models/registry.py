"""One registry of architectures, chosen by name (`--arch`), for teachers and students alike.

    from models.registry import build_model
    model = build_model("unet", (128, 128, 1), base_filters=4, depth=4, upsample="transpose", name="unet4")
    model = build_model("sepunet", (128, 128, 1), base_filters=8, depth=4)   # depthwise-separable U-Net

Architectures: unet (models/unet.py; depth 3 with more width is the wide-shallow variant), resunet
(models/resunet.py: residual blocks + scSE, a teacher candidate), sepunet (models/sepunet.py), mbv2cat / mbv2add /
lraspp (models/mbv2.py). Knobs shared by all: base_filters
(width of the first level, doubled per level), depth (levels), upsample (decoder x2: "transpose" or
"bilinear"; default per architecture). The names, default decoders and shape rules live Keras-free in
common/choices.py, which the configs, run names and the sweep read too.

The contract every builder honours: input (H, W, 1) in [0, 1] -> ... -> a linear 1x1 conv named
`logits` -> sigmoid output; registered layers only (reloads with safe_mode=True); builtin TFLite ops
only. To add an architecture: write `build_<name>(input_shape, base_filters, depth, upsample, name)`
in its own module under models/, add it to BUILDERS here and to common.choices.ARCHITECTURES, and add it
to tests/test_models.py.
"""

from __future__ import annotations

import re

import keras

from common.choices import ARCHITECTURES as KNOWN
from common.choices import check_arch
from models.mbv2 import build_lraspp, build_mbv2, build_mbv2add
from models.resunet import build_resunet
from models.sepunet import build_sepunet
from models.unet import build_unet

BUILDERS = {
    "unet": build_unet,
    "resunet": build_resunet,
    "sepunet": build_sepunet,
    "mbv2cat": build_mbv2,
    "mbv2add": build_mbv2add,
    "lraspp": build_lraspp,
}
if set(BUILDERS) != set(KNOWN):  # common.choices names the architectures (Keras-free); each needs a builder here
    raise ImportError(f"models.registry builds {sorted(BUILDERS)} but common.choices.ARCHITECTURES names {sorted(KNOWN)}")


def resolve_upsample(arch: str, upsample: str | None) -> str:
    return upsample or KNOWN[arch].decoder


def build_model(arch: str, input_shape, base_filters: int, depth: int, upsample: str | None = None, name: str | None = None) -> keras.Model:
    """Build architecture `arch`; a ValueError names the valid architectures (or what else is wrong)."""
    check_arch(arch, input_shape, base_filters, depth, upsample)
    return BUILDERS[arch](input_shape, base_filters, depth, upsample=resolve_upsample(arch, upsample), name=name or f"{arch}{base_filters}")


def logits_model(model: keras.Model, name: str | None = None) -> keras.Model:
    """Sub-model sharing weights: model input -> its `logits` layer output."""
    try:
        logits = model.get_layer("logits").output
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named 'logits'") from None
    return keras.Model(model.inputs[0], logits, name=name or f"{model.name}_logits")


def _stage_layers(model: keras.Model) -> dict:
    """{stage name: layer}: the `*_out` layers; a U-Net saved before the stages were named (2026-11-27) has none,
    and its stage outputs are the same tensors under the names of their last activation (`enc1_relu2` is `enc1_out`)."""
    named = {layer.name: layer for layer in model.layers if layer.name.endswith("_out") and len(layer.output.shape) == 4}
    if named:
        return named
    legacy = re.compile(r"^((?:enc|dec)\d+|mid)_relu2$")
    return {legacy.match(layer.name).group(1) + "_out": layer for layer in model.layers if legacy.match(layer.name)}


def stage_names(model: keras.Model) -> list[str]:
    """The model's named stage outputs (`enc{i}_out`, `mid_out`, `dec{i}_out`, `head_out`): what feature distillation matches."""
    return list(_stage_layers(model))


def stage_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """The layer whose output is the stage `name` (stage_names); ValueError naming the valid ones."""
    stages = _stage_layers(model)
    if name not in stages:
        raise ValueError(f"model {model.name!r} has no stage output {name!r}; its stage outputs: {', '.join(stages)}")
    return stages[name]


def features_model(model: keras.Model, layer_names, name: str | None = None) -> keras.Model:
    """Sub-model sharing weights: model input -> [its `logits`, the outputs of the named layers (stage_names)]."""
    outputs = [model.get_layer("logits").output, *(stage_layer(model, n).output for n in layer_names)]
    return keras.Model(model.inputs[0], outputs, name=name or f"{model.name}_features")


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
