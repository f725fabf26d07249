"""The cpu_bf16 question on TensorFlow: the cpu preset's KD + 1k student (unet4, 15 epochs, 3 seeds, the cpu unet8
teacher's cached logits) trained with KERAS_BACKEND=tensorflow, in float32 and mixed_bfloat16, in runs/cpu_tf.
Read with runs/cpu (`python -m experiments.results runs/cpu runs/cpu_tf --out DIR --reference
backend=torch,precision=float32,lam=0.9,unlabelled=True`), each run pairs by seed with the torch float32 run of the
same recipe: does the backend that steps fastest on this CPU (docs/PERFORMANCE.md) train as well, and as fast in a
whole run? Uses the cpu preset's teacher and cache (made by the cpu or cpu_bf16 sweep first).
"""

from experiments.configs.cpu_bf16 import PRESET as BF16

PRESET = {
    **BF16,
    "name": "cpu_tf",
    "backend": "tensorflow",
    "teacher_path": "runs/cpu/teacher/teacher.keras",  # the cpu preset's: its cache is shared, not made again
}
