"""The epochs curve: the cpu preset's baseline and KD + 1000 unlabelled unet4 students trained 90 epochs instead of 15
(same split, teacher and cache: runs/cpu/teacher), 3 seeds, in runs/cpu_e90. With runs/cpu (15) and the other
budget: python -m experiments.epochs runs/cpu runs/cpu_e45 runs/cpu_e90.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "name": "cpu_e90",
    "teacher_path": "runs/cpu/teacher/teacher.keras",
    "student": {**CPU["student"], "epochs": 90},
    "grid": {"lam": [0, 0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True]},
}
