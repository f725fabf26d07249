"""The epochs curve: the cpu preset's baseline and KD + 1000 unlabelled unet4 students trained 45 epochs instead of 15
(same split, teacher and cache: runs/cpu/teacher), 3 seeds, in runs/cpu_e45; then the best combination of the
15-epoch signals at this budget: KD + 1000 unlabelled with the Lovasz hinge as the hard term in the last 9 of the 45
epochs (the same fifth of the schedule as cpu_finish's 3 of 15). With runs/cpu (15) and the other budget: python -m
experiments.epochs runs/cpu runs/cpu_e45 runs/cpu_e90; the finish: python -m experiments.results runs/cpu_e45
--reference "unet4 KD T=2 lam=0.9 s=T +unl".
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "name": "cpu_e45",
    "teacher_path": "runs/cpu/teacher/teacher.keras",
    "student": {**CPU["student"], "epochs": 45},
    "grid": [
        {"lam": [0, 0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True]},
        {"lam": [0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True], "options": [{"lovasz_epochs": 9}]},
    ],
}
