"""Two questions on top of the cpu preset, in the same sweep dir (it reuses the cpu preset's teacher, cache and
baselines; run cpu.json first or alongside): does --temperature auto (the teacher's NLL-optimal T) beat T = 2, and
how should a black-box teacher (probability maps only, no flipped view) be used: with mirrored maps under flips, or
without flips? 9 student runs, about 1 hour as two 1-thread streams.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "grid": [
        {"lam": [0, 0.9], "temperature": ["auto"], "scale": ["T"]},
        {"lam": [0.9], "temperature": [2], "scale": ["T"], "blackbox": ["mirrored", "noflip"]},
    ],
}
