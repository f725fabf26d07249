"""The one builder of the training graph: (student, teacher logits source, T, lambda, s(T)) -> loss.

    inputs {"image", "mask"[, "teacher_logits"]}
      student:  image -> student logits z
      teacher:  TeacherLogits.soft_target: teacher logits z_t -> head swap sigmoid(z_t / T)   (omitted for the baseline)
      loss:     DistillationLoss(lam, T, s(T)[, hard_loss]) [mask, z, sigmoid(z_t / T)] -> per sample [total, hard, soft]

T is given once, here, and reaches both the teacher's head and the loss layer. The graph is
compiled with an identity loss (training.loop); only the student is saved and exported.
"""

from __future__ import annotations

import keras

from distill.losses import DistillationLoss
from distill.teachers import TeacherLogits
from models.registry import logits_model


def build_training_graph(
    student: keras.Model,
    teacher: TeacherLogits | None = None,
    temperature: float = 1.0,
    lam: float = 0.0,
    scale: str = "T",
    dice: bool = False,
    input_scale: float | None = None,
    hard_loss: str = "bce",
) -> keras.Model:
    """The training graph; lam = 0 without a teacher is the hard-only baseline (and the teacher's own training).

    hard_loss="lovasz": the loss layer can switch its hard term to the Lovasz hinge (its `lovasz_on`
    variable, set per epoch by training.loop for --lovasz-epochs); "bce" is the graph of earlier versions.

    input_scale: the batches carry unscaled images (training.runs.batches: uint8 after padding, a quarter
    of the bytes) and the graph multiplies them by the sidecar's scale, exactly as preprocessing would.
    """
    shape = tuple(student.inputs[0].shape[1:])
    image = keras.Input(shape, name="image")
    mask = keras.Input(shape[:2] + (1,), name="mask")
    inputs = {"image": image, "mask": mask}
    x = keras.layers.Rescaling(input_scale, name="scale")(image) if input_scale is not None else image
    parts = [mask, logits_model(student)(x)]
    if teacher is not None:
        extra, soft = teacher.soft_target(x, temperature)
        inputs.update(extra)
        parts.append(soft)
    # float32 under mixed precision too
    loss = DistillationLoss(lam, temperature, scale, dice=dice, hard_loss=hard_loss, name="loss", dtype="float32")
    return keras.Model(inputs, loss(parts), name="train_graph")
