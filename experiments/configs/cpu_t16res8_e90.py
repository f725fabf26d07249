"""Teacher or capacity at 90 epochs, from the strongest soft target: cpu_t16res8's recipe (KD + the 1000 unlabelled
images from the f=16 U-Net and the residual U-Net averaged over both and their flips) at 90 epochs with the Lovasz
finish in the last 18 (the same fifth of the schedule as 9 of 45), 3 seeds, in runs/cpu_t16res8 beside the 45-epoch
runs (their teachers and cache are the same). Its unet8-taught counterpart is cpu_e90's first row
(`python -m experiments.sweep --config cpu_e90 --list` prints its commands). About 3 h a run on one core beside another
(AVX2 EPYC): it takes several sittings, and the same command resumes each run from its last finished epoch.
"""

from experiments.configs.cpu_t16res8 import PRESET as T16RES8

PRESET = {
    **T16RES8,
    "student": {**T16RES8["student"], "epochs": 90},
    "grid": {**T16RES8["grid"], "options": [{"teacher_tta": True, "lovasz_epochs": 18}]},
}
