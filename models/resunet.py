"""Residual U-Net with scSE attention (architecture "resunet"): the shape of the TGS Salt Kaggle solutions that
used no pretrained encoder, offered as a stronger teacher than the plain U-Net at the same width.

Every level of the U-Net (encoder, middle, decoder) is one residual block: conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN,
added to the input (through a 1x1 conv + BN where the channel count changes), then ReLU (He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016), followed by concurrent spatial and channel squeeze & excitation, scSE
(Roy, Navab and Wachinger, "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional Networks",
MICCAI 2018): the feature map times a per-channel gate (global average pool -> 1x1 conv C/r -> ReLU -> 1x1 conv C ->
sigmoid) plus the feature map times a per-pixel gate (1x1 conv to one channel -> sigmoid). Decoder: x2 up (2x2
transposed conv by default, or bilinear resize + 1x1 conv), concat with the encoder skip, one residual block, scSE.

Stage outputs are named `enc{i}_out`, `mid_out`, `dec{i}_out`; then `logits` and the sigmoid. Builtin TFLite ops
only (MEAN, MUL, ADD, LOGISTIC besides the convolutions). At the same width it has 1.08x the U-Net's parameters
(resunet16: 2,091,426 against unet16's 1,945,233; resunet8: 525,590 against 487,881).
"""

from __future__ import annotations

import keras
from keras import layers

from models.blocks import act, check_shape, conv_bn_act, unet_shape

SE_RATIO = 4  # the channel gate's bottleneck: C -> C / 4 -> C (at least 2 channels)


def scse(x, prefix: str):
    """x * channel gate + x * spatial gate (Roy et al. 2018); the gates broadcast over pixels and channels."""
    c = x.shape[-1]
    g = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_cse_pool")(x)
    g = layers.Conv2D(max(2, c // SE_RATIO), 1, activation="relu", name=f"{prefix}_cse_squeeze")(g)
    g = layers.Conv2D(c, 1, activation="sigmoid", name=f"{prefix}_cse_excite")(g)
    s = layers.Conv2D(1, 1, activation="sigmoid", name=f"{prefix}_sse")(x)
    return layers.Add(name=f"{prefix}_scse")(
        [layers.Multiply(name=f"{prefix}_cse")([x, g]), layers.Multiply(name=f"{prefix}_sse_mul")([x, s])]
    )


def res_block(x, filters: int, prefix: str):
    """Two 3x3 conv + BN with the identity (or a 1x1 conv + BN projection) added before the last ReLU, then scSE."""
    shortcut = x if x.shape[-1] == filters else conv_bn_act(x, filters, 1, f"{prefix}_proj", activation=None)
    y = conv_bn_act(x, filters, 3, f"{prefix}_c1")
    y = conv_bn_act(y, filters, 3, f"{prefix}_c2", activation=None)
    return scse(act(layers.Add(name=f"{prefix}_add")([shortcut, y]), "relu", f"{prefix}_relu"), prefix)


def build_resunet(
    input_shape=(128, 128, 1),
    base_filters: int = 16,
    depth: int = 4,
    upsample: str = "transpose",
    output_name: str = "probs",
    name: str = "resunet",
) -> keras.Model:
    check_shape(input_shape, depth, "resunet")
    return unet_shape(input_shape, base_filters, depth, upsample, res_block, output_name, name)
