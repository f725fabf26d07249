"""Teacher or capacity, the strongest soft target here: the f=16 U-Net (cpu_t16's teacher) and the residual U-Net
(cpu_tres8's), two kinds of teacher on the same split, averaged over both teachers and both flips (mean logits,
--teacher-tta); then the 45-epoch best recipe distilled from it (KD + the 1000 unlabelled images, Lovasz finish in the
last 9 of 45 epochs), 3 seeds, in runs/cpu_t16res8. Paired with cpu_e45's unet8-taught students (python -m
experiments.results runs/cpu_e45 runs/cpu_t16res8 --out DIR --reference teacher=unet8,lovasz_epochs=9).

The teachers are the other presets' (trained here on this split where they are not yet). Where both already have
their caches, the ensemble's cache is their merge, in seconds, instead of both teachers run again (about 20 min):
python -m teacher.cache --from-caches runs/cpu_t16/teacher/cache runs/cpu_tres8/teacher/cache \\
    --out runs/cpu_t16res8/teacher_ensemble2/cache
About 80 min a student on one core; it resumes across sittings: run the same command again.
"""

from experiments.configs.base import CPU
from experiments.configs.cpu_e45_ensemble import PRESET as ENSEMBLE
from experiments.configs.cpu_t16 import PRESET as T16

PRESET = {
    **CPU,
    "name": "cpu_t16res8",
    "teacher_path": "runs/cpu_t16/teacher/teacher.keras",
    "teacher": T16["teacher"],  # its flags, where it is not trained yet
    "ensemble_presets": ["cpu_tres8"],
    "student": {**CPU["student"], "epochs": 45},
    "grid": ENSEMBLE["grid"],  # the recipe cpu_e45_ensemble distils from its pair
}
