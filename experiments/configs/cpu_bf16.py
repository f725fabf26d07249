"""Does bfloat16 training cost quality? The cpu preset's KD + 1k student (unet4, 15 epochs, its unet8 teacher's cached
logits, the 1000 unlabelled images), 3 seeds, in float32 (the cpu preset's own runs, shared in runs/cpu) and with
--precision mixed_bfloat16 (bfloat16 compute, float32 weights; the model saved and exported is float32), paired by
seed. On a CPU with native bfloat16 (Intel AMX) the bfloat16 step is faster (docs/PERFORMANCE.md); this asks what it
costs. About 20 minutes a run as two 1-thread streams.
"""

from experiments.configs.base import CPU

PRESET = {
    **CPU,
    "grid": {
        "lam": [0.9],
        "temperature": [2],
        "scale": ["T"],
        "unlabelled": [True],
        "options": [{}, {"precision": "mixed_bfloat16"}],
    },
}
