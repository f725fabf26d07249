"""The unlabelled axis on the cpu split and teacher (runs/cpu; the cpu preset's unet8 teacher and its cache, built once
over all 21,200 images): unet4 students distilled 15 epochs (lam 0.9, T 2, s=T) with the 1000 unlabelled Kaggle test
images (_unl) against all 18,000 (+ the other 17,000, a folder named in unlabelled_extra: set it to yours,
_unl_u18k), 16 per batch, then 32 per batch and flip-averaged soft targets; 3 seeds, paired by seed. About 35 min a
run as two 1-thread streams.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "unlabelled_extra": ["../shared/data/tgs-salt-unlabelled/images"],
    "unlabelled_all_count": 18000,
    "grid": [
        {"lam": [0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True, "all"]},
        {"lam": [0.9], "temperature": [2], "scale": ["T"], "unlabelled": ["all"], "options": [{"n_unlabelled": 32}]},
        {"lam": [0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True], "options": [{"teacher_tta": True}]},
    ],
}
