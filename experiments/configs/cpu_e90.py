"""The epochs curve at 90 epochs, and teacher or capacity at 90: the best recipe (KD + 1000 unlabelled, Lovasz finish
in the last 18 of 90 epochs, the same fifth of the schedule as cpu_e45's 9 of 45) from runs/cpu/teacher alone and from
the stronger soft target of cpu_e45_ensemble (both unet8 teachers, mean logits over teachers and flips); then the cpu
preset's baseline and KD + 1000 unlabelled at 90 epochs. Same split, teachers and caches as runs/cpu (the second
teacher, runs/cpu/teacher_s1, is shared with it), 3 seeds, in runs/cpu_e90. About 3 h a run on one core beside
another (2026-12-07, AVX2 EPYC): it takes several sittings; run the same command again and the sweep resumes each run
from its last finished epoch. With the other budgets: python -m experiments.epochs runs/cpu runs/cpu_e45 runs/cpu_e90
--model unet4 (one line per teacher, and teachers.png).
"""

from experiments.configs.base import CPU

_BEST = {"lam": [0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True]}

PRESET = {
    **CPU,
    "name": "cpu_e90",
    "teacher_path": "runs/cpu/teacher/teacher.keras",
    "ensemble_seeds": [1],  # trained beside the main teacher: runs/cpu/teacher_s1
    "student": {**CPU["student"], "epochs": 90},
    "grid": [
        {**_BEST, "options": [{"lovasz_epochs": 18}]},
        {**_BEST, "ensemble": [True], "options": [{"teacher_tta": True, "lovasz_epochs": 18}]},
        {"lam": [0, 0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True]},
    ],
}
