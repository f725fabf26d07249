"""Student architectures for the Pi on real TGS data, the same sweep dir, split, unet8 teacher and cache as the cpu
preset: baseline and KD + the 1000 unlabelled images (lam 0.9, T 2, s(T) = T, 16 unlabelled per batch), 15 epochs, 3
seeds, for the plain U-Net unet4 (the reference), its bilinear-decoder variant, the wide-shallow depth-3 U-Net, the
depthwise-separable U-Net at twice the width, MobileNetV2-style encoders with concat and add skips, and the
LR-ASPP-style head. Then `python -m experiments.frontier runs/cpu` exports, benchmarks and plots. Depthwise models train
2-3x slower than unet4 on the torch CPU backend (benchmarks.train_speed): about 17 hours as two 1-thread streams on
a 2-core CPU.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "grid": [
        {
            "lam": [0, 0.9],
            "unlabelled": [True],
            "model": [
                {"arch": "unet", "base_filters": 4},
                {"arch": "mbv2add", "base_filters": 4},
                {"arch": "sepunet", "base_filters": 8},
                {"arch": "lraspp", "base_filters": 4},
                {"arch": "mbv2cat", "base_filters": 4},
                {"arch": "unet", "base_filters": 6, "depth": 3},
                {"arch": "unet", "base_filters": 4, "upsample": "bilinear"},
            ],
        }
    ],
}
