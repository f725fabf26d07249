r"""Distil a frozen teacher into a small student (or train the hard-only baseline).

    python distill_train.py --data ../shared/data/tgs-salt --teacher runs/unet16_teacher_s0/teacher.keras \
        --lam 0.9 --temperature 2 --seed 0          # -> runs/unet4_from_unet16_T2_l0.9_sT_s0
    python distill_train.py --data ../shared/data/tgs-salt --lam 0 --seed 0   # baseline -> runs/unet4_baseline_s0
    python distill_train.py ... --temperature auto   # T = the teacher's NLL-optimal T on the validation split (printed)
    KERAS_BACKEND=jax python distill_train.py ... --devices 4 --batch-size 128   # data parallel over 4 GPUs
    python distill_train.py ... --augment strong --unlabelled DATA --mixup 0.2   # shifts, zoom, jitter + mixup, teacher in the graph -> ..._aug_mix0.2_s0
    python distill_train.py ... --feature-loss fitnets --feature-weight 1   # + FitNets hints at dec1_out (also: at, cwd) -> ..._fitnets1_s0
    # prints the config, per-epoch progress with loss, hard and soft parts, "val mean_iou ..." and
    # "done: val mean_iou ... kaggle_map ... (xx,xxx params, best epoch N, xx img/s) -> RUN_DIR"

The training graph joins the frozen soft teacher (input -> teacher logits -> sigmoid(logits/T)) and
the student on one input, takes the true mask as a second input and outputs the loss of a
`DistillationLoss` layer, compiled with an identity loss:

    loss = (1 - lam) * BCE(y, sigmoid(z)) + lam * s(T) * BCE(sigmoid(z_teacher/T), sigmoid(z/T))

lam = 0 is the baseline, trained through this same code and budget (the teacher is then left out of
the graph unless given, in which case the soft part is still logged). Only the student is saved:
RUN_DIR/student.keras (--feature-loss adds feature_weight * a feature loss between named stages of the
student and of the teacher, which must then be in the graph; its adapters are not part of the student). The code: student/train.py (steps), distill/ (loss layer, soft-target path,
graph), training/ (loop, run dirs), models/ (architectures). The split defaults to the teacher run's
split.json, so the student is validated on images the teacher never trained on.
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

from common.cli import run
from student.train import main

if __name__ == "__main__":
    run(lambda argv: main(argv, __doc__))
