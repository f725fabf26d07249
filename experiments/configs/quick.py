"""Synthetic data, minutes on a 2-core CPU: used by the demo and the tests."""

PRESET = {
    "name": "quick",
    "data": "synthetic",
    "synthetic": {"n_train": 600, "n_test": 150, "seed": 0},
    "teacher": {"base_filters": 8, "epochs": 10},
    "teacher_cache": True,
    "student": {"base_filters": 4, "epochs": 10},
    "grid": {"lam": [0, 0.9], "temperature": [2], "scale": ["T"], "unlabelled": [False, True]},
    "seeds": [0, 1],
}
