"""The competition finish on the cpu split and teacher (runs/cpu): unet4 students, KD + the 1000 unlabelled test images
(lam 0.9, T 2, s=T, 15 epochs), against the same with the Lovasz hinge as the hard term in the last 3 of the 15
epochs and a mask threshold picked on the validation split (--lovasz-epochs 3 --tune-threshold: the threshold is
scored on the images that chose it, so its figure is optimistic; the Lovasz effect is read at threshold 0.5), and
flip-averaged soft targets (--teacher-tta). 3 seeds, paired by seed; compare with `python -m experiments.results
runs/cpu --reference "unet4 KD T=2 lam=0.9 s=T +unl"`. About 20 min a run as two 1-thread streams.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "grid": [
        {
            "lam": [0.9],
            "temperature": [2],
            "scale": ["T"],
            "unlabelled": [True],
            "options": [{}, {"lovasz_epochs": 3, "tune_threshold": True}, {"teacher_tta": True}],
        }
    ],
}
