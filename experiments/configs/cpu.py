"""Real TGS data (cache/tgs.npz, made by python -m data.prepare --max-unlabelled 1000 from the Kaggle download) on a
2-core CPU: two unet8 teachers (488 k params, 20 epochs; seeds 0 and 1, the second only for the ensemble) and unet4
students (123 k) trained 15 epochs from cached logits: baseline, design-card KD, KD + the 1000 unlabelled test
images, KD from the two-teacher ensemble; 3 seeds each. About 2.5 hours as two 1-thread streams (see the sweep's
docstring).
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "grid": [
        {"lam": [0, 0.9], "temperature": [2], "scale": ["T"], "unlabelled": [False, True]},
        {"lam": [0.9], "temperature": [2], "scale": ["T"], "ensemble": [True]},
    ],
    "ensemble_seeds": [1],
}
