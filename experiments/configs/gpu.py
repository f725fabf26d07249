"""The full grid on a GPU box (KERAS_BACKEND=jax): the f=16 teacher (plus a second seed for the ensemble), T x lambda x
s(T) x width x unlabelled, and KD from the two-teacher ensemble with and without unlabelled images; 3 seeds, 40
epochs. Several GPUs: add "devices": N to "teacher" and "student" (data parallel).
"""

PRESET = {
    "name": "gpu",
    "data": "cache/tgs.npz",
    "teacher": {"base_filters": 16, "epochs": 40},
    "teacher_cache": True,
    "student": {"epochs": 40},
    "grid": [
        {"lam": [0, 0.5, 0.9, 1.0], "temperature": [1, 2, 4, 8], "scale": ["T", "T2"], "base_filters": [2, 4], "unlabelled": [False, True]},
        {"lam": [0.9], "temperature": [2], "scale": ["T2"], "base_filters": [2, 4], "unlabelled": [False, True], "ensemble": [True]},
    ],
    "seeds": [0, 1, 2],
    "ensemble_seeds": [1],
}
