"""Teacher or capacity, another kind of teacher: the residual U-Net with scSE (models/resunet.py) at f=8, 525,590
params (1.08x unet8), trained with the cpu teacher's flags and budget (20 epochs, BCE, batch 32) on the cpu data and
split, then the 45-epoch best recipe distilled from it (KD + the 1000 unlabelled images, Lovasz finish in the last 9
of 45 epochs), 3 seeds, in runs/cpu_tres8. Paired with cpu_e45's unet8-taught students, it asks whether a teacher
of the Kaggle solutions' shape, at unet8's size, teaches better. It resumes across sittings: run the same command again.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "name": "cpu_tres8",
    "teacher": {"arch": "resunet", "base_filters": 8, "epochs": 20},
    "student": {**CPU["student"], "epochs": 45},
    "grid": {"lam": [0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True], "options": [{"lovasz_epochs": 9}]},
}
