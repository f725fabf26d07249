"""Depthwise-separable U-Net (architecture "sepunet"): the U-Net's shape with MobileNet-v1 convolutions.

After a full 3x3 stem conv (one input channel: a depthwise conv there would be a scalar), every 3x3
conv of the U-Net becomes a depthwise-separable one (3x3 depthwise + 1x1 pointwise, each with BN and
ReLU). A full 3x3 conv c -> c costs 9c^2 multiply-adds a pixel, the separable one 9c + c^2, so the
width can about double at the cost of today's U-Net (sepunet8 ~ unet4 in MACs). Decoder: x2 up
(bilinear resize + 1x1 conv, or a 2x2 transposed conv), concat with the encoder skip, two separable
convs. Stage outputs are named `enc{i}_out`, `mid_out`, `dec{i}_out`; then `logits` and the sigmoid.
"""

from __future__ import annotations

import keras
from keras import layers

from models.blocks import check_shape, conv_bn_act, head, separable, upsample_x2


def build_sepunet(
    input_shape=(128, 128, 1),
    base_filters: int = 8,
    depth: int = 4,
    upsample: str = "bilinear",
    output_name: str = "probs",
    name: str = "sepunet",
) -> keras.Model:
    check_shape(input_shape, depth, "sepunet")
    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    for i in range(depth):
        f = base_filters * 2**i
        x = conv_bn_act(x, f, 3, "enc0_stem") if i == 0 else separable(x, f, f"enc{i}_sep1")
        x = separable(x, f, f"enc{i}_sep2")
        x = layers.Identity(name=f"enc{i}_out")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
    f = base_filters * 2**depth
    x = separable(x, f, "mid_sep1")
    x = layers.Identity(name="mid_out")(separable(x, f, "mid_sep2"))
    for i in reversed(range(depth)):
        f = base_filters * 2**i
        x = upsample_x2(x, f, upsample, f"dec{i}")
        x = layers.Concatenate(name=f"dec{i}_concat")([x, skips[i]])
        x = separable(x, f, f"dec{i}_sep1")
        x = layers.Identity(name=f"dec{i}_out")(separable(x, f, f"dec{i}_sep2"))
    return keras.Model(inputs, head(x, output_name), name=name)
