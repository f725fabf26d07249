"""Teacher or capacity, a wider teacher: the f=16 U-Net (1.94 M params, the classic Kaggle Keras U-Net and
shared/REFERENCE.md's KD teacher) trained 30 epochs on the cpu data and split (split seed 0, made again the same way),
then the 45-epoch best recipe distilled from it (KD + the 1000 unlabelled images, Lovasz finish in the last 9 of 45
epochs), 3 seeds, in runs/cpu_t16. On one core of a 2-core AVX2 EPYC (torch) the f=16 U-Net trains at about 7.6 img/s:
about 3.5 h for the teacher, about 90 min a student. It takes more than one sitting: stop it any time and run the same
command again, the sweep resumes each run from its last finished epoch. The unet8-taught students are cpu_e45's.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "name": "cpu_t16",
    "teacher": {"base_filters": 16, "epochs": 30},
    "student": {**CPU["student"], "epochs": 45},
    "grid": {"lam": [0.9], "temperature": [2], "scale": ["T"], "unlabelled": [True], "options": [{"lovasz_epochs": 9}]},
}
