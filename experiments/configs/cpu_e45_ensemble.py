"""Teacher or capacity, at 45 epochs: the best recipe (KD + 1000 unlabelled, Lovasz finish in the last 9 epochs) distilled
from the two-teacher unet8 ensemble (runs/cpu/teacher and runs/cpu/teacher_s1, mean logits: 0.749 val Kaggle mAP
against the single teacher's 0.731) instead of from runs/cpu/teacher alone (cpu_e45's third row, same dir, same
seeds). 3 seeds, paired by seed: python -m experiments.results runs/cpu_e45 --reference "unet4 KD T=2 lam=0.9 s=T +unl
+lovasz9". About 90 min a run on one core; the second teacher (about 45 min) is shared with the cpu preset.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "name": "cpu_e45",
    "teacher_path": "runs/cpu/teacher/teacher.keras",
    "ensemble_seeds": [1],  # trained beside the main teacher: runs/cpu/teacher_s1
    "student": {**CPU["student"], "epochs": 45},
    "grid": {"lam": [0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True], "ensemble": [True], "options": [{"lovasz_epochs": 9}]},
}
