"""Building blocks shared by the light architectures (sepunet, mbv2, lraspp): named Keras layers only.

Every block names its layers `<prefix>_<part>` so feature distillation and TFLite inspection find
encoder and decoder stages by name. BatchNormalization uses momentum 0.9 (see models.unet) and is
folded into the preceding convolution by the TFLite converter.
"""

from __future__ import annotations

import keras
from keras import layers

BN_MOMENTUM = 0.9


def act(x, kind: str, name: str):
    """ "relu" or "relu6" (both int8-friendly builtins; hard-swish is avoided on purpose)."""
    return layers.ReLU(max_value=6.0 if kind == "relu6" else None, name=name)(x)


def conv_bn_act(x, filters: int, kernel: int, prefix: str, strides: int = 1, activation: str | None = "relu"):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn")(x)
    return act(x, activation, f"{prefix}_{activation}") if activation else x


def separable(x, filters: int, prefix: str, strides: int = 1, activation: str = "relu"):
    """Depthwise-separable conv (MobileNet v1): 3x3 depthwise -> BN -> act -> 1x1 pointwise -> BN -> act."""
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{prefix}_dw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_dw_bn")(x)
    x = act(x, activation, f"{prefix}_dw_{activation}")
    return conv_bn_act(x, filters, 1, f"{prefix}_pw", activation=activation)


def inverted_residual(x, filters: int, expansion: int, prefix: str, strides: int = 1):
    """MobileNetV2 block: 1x1 expand -> ReLU6 -> 3x3 depthwise (stride) -> ReLU6 -> 1x1 linear project,
    plus the identity when stride 1 and the channel count is unchanged (Sandler et al., CVPR 2018)."""
    c_in = x.shape[-1]
    y = conv_bn_act(x, c_in * expansion, 1, f"{prefix}_expand", activation="relu6") if expansion > 1 else x
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{prefix}_dw")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_dw_bn")(y)
    y = act(y, "relu6", f"{prefix}_dw_relu6")
    y = conv_bn_act(y, filters, 1, f"{prefix}_project", activation=None)
    if strides == 1 and c_in == filters:
        y = layers.Add(name=f"{prefix}_add")([x, y])
    return y


def upsample_x2(x, filters: int, mode: str, prefix: str):
    """x2 upsampling to `filters` channels: "transpose" (2x2 transposed conv) or "bilinear" (resize + 1x1 conv)."""
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{prefix}_up")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{prefix}_up")(x)
    return layers.Conv2D(filters, 1, name=f"{prefix}_upconv")(x)


def head(x, output_name: str):
    """The contract's end: a linear 1x1 conv named `logits`, then the sigmoid."""
    logits = layers.Conv2D(1, 1, name="logits")(x)
    return layers.Activation("sigmoid", name=output_name)(logits)


def check_shape(input_shape, depth: int, arch: str) -> None:
    h, w = input_shape[:2]
    if depth < 1:
        raise ValueError(f"{arch}: depth must be >= 1, got {depth}")
    if h % 2**depth or w % 2**depth:
        raise ValueError(f"input {h}x{w} is not divisible by 2**depth = {2**depth}")


def unet_shape(input_shape, base_filters: int, depth: int, upsample: str, block, output_name: str, name: str) -> keras.Model:
    """The U-Net's skeleton around a level's `block(x, filters, prefix) -> x`: `depth` encoder levels (block, then a
    2x2 max pool; widths base_filters * 2**i), the middle level, and `depth` decoder levels (upsample_x2, concat with
    the encoder's skip, block), each level's output named `enc{i}_out`, `mid_out`, `dec{i}_out`; then `head`."""
    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    for i in range(depth):
        x = layers.Identity(name=f"enc{i}_out")(block(x, base_filters * 2**i, f"enc{i}"))
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
    x = layers.Identity(name="mid_out")(block(x, base_filters * 2**depth, "mid"))
    for i in reversed(range(depth)):
        f = base_filters * 2**i
        x = upsample_x2(x, f, upsample, f"dec{i}")
        x = layers.Concatenate(name=f"dec{i}_concat")([x, skips[i]])
        x = layers.Identity(name=f"dec{i}_out")(block(x, f, f"dec{i}"))
    return keras.Model(inputs, head(x, output_name), name=name)
