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

from models.blocks import check_shape, conv_bn_act, separable, unet_shape


def _level(x, filters: int, prefix: str):
    """Two separable convs; the first level starts with a full 3x3 conv instead (one input channel)."""
    x = conv_bn_act(x, filters, 3, "enc0_stem") if prefix == "enc0" else separable(x, filters, f"{prefix}_sep1")
    return separable(x, filters, f"{prefix}_sep2")


def build_sepunet(
    input_shape=(128, 128, 1),
    base_filters: int = 8,
    depth: int = 4,
    upsample: str = "bilinear",
    output_name: str = "probs",
    name: str = "sepunet",
) -> keras.Model:
    check_shape(input_shape, depth, "sepunet")
    return unet_shape(input_shape, base_filters, depth, upsample, _level, output_name, name)
