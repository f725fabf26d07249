"""Teacher-in-the-graph signals on the cpu split and teacher (runs/cpu): unet4 students, KD + the 1000 unlabelled test
images (lam 0.9, T 2, s=T, 15 epochs) plus one signal each: FitNets hints (weight 1), attention transfer (weight 500
= the paper's beta/2), channel-wise distillation (weight 3, the CWD paper's segmentation weight) on dec1_out, strong
augmentation, mixup 0.2 of the unlabelled images (flips only), strong augmentation + mixup 0.2; and the baseline
with strong augmentation (same budget). 3 seeds; compare with `python -m experiments.results runs/cpu --reference
"unet4 KD T=2 lam=0.9 s=T +unl"`. The teacher runs in the graph for all of them (features, augmented views).
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "grid": [
        {"lam": [0], "options": [{"augment": "strong"}]},
        {
            "lam": [0.9],
            "temperature": [2],
            "scale": ["T"],
            "unlabelled": [True],
            "options": [
                {"feature_loss": "fitnets", "feature_weight": 1},
                {"feature_loss": "at", "feature_weight": 500},
                {"feature_loss": "cwd", "feature_weight": 3},
                {"augment": "strong"},
                {"mixup": 0.2},
                {"augment": "strong", "mixup": 0.2},
            ],
        },
    ],
}
