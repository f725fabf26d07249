"""The U-Net builder (architecture "unet" of models.registry), used for teacher and student at different widths.

Classic Kaggle TGS U-Net: `depth` poolings, two Conv-BN-ReLU per level, transposed-conv (or
bilinear-upsample + conv) decoder, a named linear 1x1 conv `logits`, then a sigmoid. With
base_filters=16, depth=4 it has 1.94 M parameters; base_filters=4 gives a 1/16-size student.
"""

from __future__ import annotations

import keras
from keras import layers


def _conv_block(x, filters: int, prefix: str, batchnorm: bool):
    for j in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batchnorm, name=f"{prefix}_conv{j}")(x)
        if batchnorm:
            # momentum 0.9 (PyTorch's 0.1): with ~100 steps an epoch, Keras' 0.99 leaves the moving
            # statistics near their initial values for several epochs and validation collapses
            x = layers.BatchNormalization(momentum=0.9, name=f"{prefix}_bn{j}")(x)
        x = layers.Activation("relu", name=f"{prefix}_relu{j}")(x)
    return x


def build_unet(
    input_shape=(128, 128, 1),
    base_filters: int = 16,
    depth: int = 4,
    upsample: str = "transpose",
    batchnorm: bool = True,
    output_name: str = "probs",
    name: str = "unet",
) -> keras.Model:
    """U-Net: image (H, W, C) in [0, 1] -> sigmoid probability map (H, W, 1) named `output_name`.

    The layer before the sigmoid is the linear 1x1 conv `logits` (head replacement and
    distillation read it). Stage outputs are named `enc{i}_out`, `mid_out`, `dec{i}_out` (feature
    distillation and TFLite inspection find them by name). H and W must be divisible by 2**depth.
    upsample: "transpose" (Conv2DTranspose, the classic) or "bilinear" (UpSampling2D + Conv2D,
    friendlier to int8 TFLite).
    """
    if upsample not in ("transpose", "bilinear"):
        raise ValueError(f"upsample must be 'transpose' or 'bilinear', not {upsample!r}")
    h, w = input_shape[:2]
    if h % 2**depth or w % 2**depth:
        raise ValueError(f"input {h}x{w} is not divisible by 2**depth = {2**depth}")
    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    for i in range(depth):
        x = layers.Identity(name=f"enc{i}_out")(_conv_block(x, base_filters * 2**i, f"enc{i}", batchnorm))
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
    x = layers.Identity(name="mid_out")(_conv_block(x, base_filters * 2**depth, "mid", batchnorm))
    for i in reversed(range(depth)):
        filters = base_filters * 2**i
        if upsample == "transpose":
            x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"dec{i}_up")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{i}_up")(x)
            x = layers.Conv2D(filters, 3, padding="same", name=f"dec{i}_upconv")(x)
        x = layers.Concatenate(name=f"dec{i}_concat")([x, skips[i]])
        x = layers.Identity(name=f"dec{i}_out")(_conv_block(x, filters, f"dec{i}", batchnorm))
    logits = layers.Conv2D(1, 1, name="logits")(x)
    probs = layers.Activation("sigmoid", name=output_name)(logits)
    return keras.Model(inputs, probs, name=name)
