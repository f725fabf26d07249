"""T, lambda and s(T) on the cpu budget, in the same sweep dir as cpu.json (reuses its teacher, cache and baselines;
run cpu.json first): one factor at a time around the design card (T 2, lambda 0.9, s(T) = T), the settings
REFERENCE.md compared on a GPU. 4 configurations x 3 seeds, about 1.5 hours as two 1-thread streams (two sweeps on
this config share the work: each skips the run the other holds).
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "grid": [
        {"lam": [0.9], "temperature": [2, 4], "scale": ["T2"]},
        {"lam": [0.5], "temperature": [1], "scale": ["T"]},
        {"lam": [1.0], "temperature": [2], "scale": ["T"]},
    ],
}
