"""Teacher or capacity, at 45 epochs: the best recipe (KD + 1000 unlabelled, Lovasz finish in the last 9 epochs) distilled
from a stronger soft target, the two unet8 teachers of the cpu preset (runs/cpu/teacher and runs/cpu/teacher_s1)
averaged over both teachers and both flips (--teacher-tta): 0.7464 val Kaggle mAP against runs/cpu/teacher's 0.7305
(flip-averaged, that teacher alone scores 0.7308: the flips add nothing to it). The same recipe from runs/cpu/teacher
alone is cpu_e45's third row, same dir and seeds. 3 seeds, paired by seed: python -m experiments.epochs runs/cpu_e45
(one line per teacher, and teachers.png). About 90 min a run on one core; the second teacher (about 45 min) is shared
with the cpu preset.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "name": "cpu_e45",
    "teacher_path": "runs/cpu/teacher/teacher.keras",
    "ensemble_seeds": [1],  # trained beside the main teacher: runs/cpu/teacher_s1
    "student": {**CPU["student"], "epochs": 45},
    "grid": {
        "lam": [0.9],
        "temperature": [2],
        "scale": ["T"],
        "unlabelled": [True],
        "ensemble": [True],
        "options": [{"teacher_tta": True, "lovasz_epochs": 9}],
    },
}
