"""MobileNetV2-style U-Net (architectures "mbv2cat" and "mbv2add") and an LR-ASPP-style head ("lraspp").

Encoder (Sandler et al., CVPR 2018): a full-resolution 3x3 stem conv (ReLU6), then per level one
stride-2 inverted-residual block (1x1 expand by `expansion`, 3x3 depthwise, ReLU6, linear 1x1
projection) and one stride-1 block with the identity shortcut; channels base * 2**i.

mbv2cat / mbv2add decoder (light): bilinear x2 (or a 2x2 transposed conv), a 1x1 conv to the skip's
width, the skip joined by concat (mbv2cat) or add (mbv2add: no CONCATENATION requantize in int8), one
depthwise-separable conv (ReLU6).

lraspp (Howard et al., "Searching for MobileNetV3", ICCV 2019, the LR-ASPP head), adapted to
101-pixel masks: the deepest features go through a 1x1 conv gated by a squeeze branch (global average
pool -> 1x1 conv -> sigmoid), are upsampled bilinearly to 1/2 resolution and added to a 1x1
projection of the 1/2-resolution features, then ReLU6 (see "int8" below); a last bilinear x2 and a separable conv on the
concatenation with the stem's full-resolution features put boundaries back at pixel level.
int8: TFLite's int8 CONCATENATION requires one scale for its inputs and output, and the converter gives
it to the input tensors themselves. Before 2026-11-28 the head's sum was unbounded (about -19..20 on
real data), so the stem's ReLU6 output, which also feeds the encoder, was quantized at a 6x coarser
step and the int8 file lost 0.08-0.11 mean IoU; with the ReLU6 both inputs share the stem's 6/255 step.

Stage outputs are named `enc{i}_out`, `dec{i}_out` (`head_out` for lraspp); then `logits`, sigmoid.
"""

from __future__ import annotations

import keras
from keras import layers

from models.blocks import act, check_shape, conv_bn_act, head, inverted_residual, separable, upsample_x2

EXPANSION = 4  # MobileNetV2 uses 6; at 4-64 channels 4 keeps the expanded tensors (the memory traffic) smaller


def _encoder(inputs, base_filters: int, depth: int, expansion: int):
    x = conv_bn_act(inputs, base_filters, 3, "enc0_stem", activation="relu6")
    skips = [layers.Identity(name="enc0_out")(x)]
    x = skips[0]
    for i in range(1, depth + 1):
        f = base_filters * 2**i
        x = inverted_residual(x, f, expansion, f"enc{i}_ir1", strides=2)
        x = inverted_residual(x, f, expansion, f"enc{i}_ir2")
        x = layers.Identity(name=f"enc{i}_out")(x)
        skips.append(x)
    return skips


def build_mbv2(
    input_shape=(128, 128, 1),
    base_filters: int = 8,
    depth: int = 4,
    upsample: str = "bilinear",
    skip: str = "concat",
    expansion: int = EXPANSION,
    output_name: str = "probs",
    name: str = "mbv2cat",
) -> keras.Model:
    check_shape(input_shape, depth, "mbv2cat")
    if skip not in ("concat", "add"):
        raise ValueError(f"skip must be 'concat' or 'add', not {skip!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    skips = _encoder(inputs, base_filters, depth, expansion)
    x = skips[-1]
    for i in reversed(range(depth)):
        f = base_filters * 2**i
        x = upsample_x2(x, f, upsample, f"dec{i}")
        if skip == "add":
            x = layers.Add(name=f"dec{i}_add")([x, skips[i]])
        else:
            x = layers.Concatenate(name=f"dec{i}_concat")([x, skips[i]])
        x = layers.Identity(name=f"dec{i}_out")(separable(x, f, f"dec{i}_sep", activation="relu6"))
    return keras.Model(inputs, head(x, output_name), name=name)


def build_mbv2add(
    input_shape=(128, 128, 1), base_filters: int = 8, depth: int = 4, upsample: str = "bilinear", name: str = "mbv2add", **kw
):
    return build_mbv2(input_shape, base_filters, depth, upsample, skip="add", name=name, **kw)


def build_lraspp(
    input_shape=(128, 128, 1),
    base_filters: int = 8,
    depth: int = 4,
    upsample: str = "bilinear",
    expansion: int = EXPANSION,
    output_name: str = "probs",
    name: str = "lraspp",
) -> keras.Model:
    """`upsample` is accepted for the common signature; the LR-ASPP head always resizes bilinearly."""
    check_shape(input_shape, depth, "lraspp")
    if depth < 2:
        raise ValueError(f"lraspp: depth must be >= 2, got {depth}")
    inputs = keras.Input(shape=input_shape, name="image")
    skips = _encoder(inputs, base_filters, depth, expansion)
    deep, half, full = skips[-1], skips[1], skips[0]
    c = base_filters * 2  # head width
    a = conv_bn_act(deep, c, 1, "aspp_main")
    g = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(deep)
    g = layers.Conv2D(c, 1, name="aspp_gate_conv")(g)
    g = layers.Activation("sigmoid", name="aspp_gate")(g)
    a = layers.Multiply(name="aspp_mul")([a, g])
    a = layers.UpSampling2D(2 ** (depth - 1), interpolation="bilinear", name="aspp_up")(a)
    low = layers.Conv2D(c, 1, name="aspp_low")(half)
    x = layers.Add(name="aspp_add")([a, low])
    # Bounded like the stem before the two are concatenated: int8 CONCATENATION gives its inputs one
    # scale, and the stem's tensor also feeds the encoder (an unbounded sum here widened its scale 6x)
    x = act(x, "relu6", "aspp_relu6")
    x = layers.UpSampling2D(2, interpolation="bilinear", name="head_up")(x)
    x = layers.Concatenate(name="head_concat")([x, full])
    x = layers.Identity(name="head_out")(separable(x, base_filters, "head_sep", activation="relu"))
    return keras.Model(inputs, head(x, output_name), name=name)
