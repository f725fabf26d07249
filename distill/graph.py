"""The one builder of the training graph: (student, teacher logits source, T, lambda, s(T)) -> loss.

    inputs {"image", "mask"[, "teacher_logits"]}
      student:  image -> student logits z
      teacher:  TeacherLogits.soft_target: teacher logits z_t -> head swap sigmoid(z_t / T)   (omitted for the baseline)
      loss:     DistillationLoss(lam, T, s(T)[, hard_loss]) [mask, z, sigmoid(z_t / T)] -> per sample [total, hard, soft]
      feature KD (feature_loss "fitnets" | "at" | "cwd", distill.losses): the student's and the frozen teacher's
                named stage outputs (feature_layers, pairs of names: student layer, teacher layer) -> one loss layer
                per pair -> AddFeatureTerm(w) -> per sample [total + w * feat, hard, soft, feat]

T is given once, here, and reaches both the teacher's head and the loss layer. The graph is
compiled with an identity loss (training.loop); only the student is saved and exported. Feature
distillation needs the teacher's features, so the teacher runs in the graph (not a logits cache); the
adapters of FitNets and CWD belong to their loss layers: training graph only, not the saved student.
"""

from __future__ import annotations

import keras

from common.cli import UserError
from distill.losses import AddFeatureTerm, DistillationLoss, feature_loss_layer
from distill.teachers import TeacherLogits
from models.registry import features_model, logits_model, stage_names


def check_feature_layers(student: keras.Model, teacher: keras.Model, pairs) -> None:
    """UserError (one line, naming the valid names) when a (student layer, teacher layer) pair names a layer
    that is not a stage output of that model (models.registry.stage_names)."""
    for role, model, names in (("student", student, [s for s, _ in pairs]), ("teacher", teacher, [t for _, t in pairs])):
        valid = stage_names(model)
        for name in names:
            if name not in valid:
                raise UserError(f"--feature-layers: the {role} {model.name} has no stage output {name!r}; choose among {', '.join(valid)}")


def check_unique_variables(model: keras.Model) -> None:
    """ValueError naming a variable path that two of the graph's variables share.

    The torch backend keeps a model's variables in a dict keyed by path, so of two variables with one
    path only one reaches the graph's torch parameters; the other is trained but never zeroed by
    `zero_grad`, and its gradients add up over all steps (a teacher and a student built by the same
    builder have the same paths unless the teacher is loaded in a name scope: distill.teachers.load_teacher).
    """
    seen = set()
    for v in model.weights:
        if v.path in seen:
            raise ValueError(f"two variables of the training graph share the path {v.path!r}: load the teacher with a name scope")
        seen.add(v.path)


def build_training_graph(
    student: keras.Model,
    teacher: TeacherLogits | None = None,
    temperature: float = 1.0,
    lam: float = 0.0,
    scale: str = "T",
    dice: bool = False,
    input_scale: float | None = None,
    hard_loss: str = "bce",
    feature_loss: str = "",
    feature_weight: float = 1.0,
    feature_layers=(),
) -> keras.Model:
    """The training graph; lam = 0 without a teacher is the hard-only baseline (and the teacher's own training).

    hard_loss="lovasz": the loss layer can switch its hard term to the Lovasz hinge (its `lovasz_on`
    variable, set per epoch by training.loop for --lovasz-epochs); "bce" is the graph of earlier versions.

    input_scale: the batches carry unscaled images (training.runs.batches: uint8 after padding, a quarter
    of the bytes) and the graph multiplies them by the sidecar's scale, exactly as preprocessing would.

    feature_loss ("" = off): add feature_weight * the feature loss of each (student layer, teacher layer) pair of
    `feature_layers` (stage names, e.g. [("dec1_out", "dec1_out")]); the teacher (one model, in the graph) sees
    the same scaled image as the student. The output gets a 4th column, the unweighted feature loss.
    """
    shape = tuple(student.inputs[0].shape[1:])
    image = keras.Input(shape, name="image")
    mask = keras.Input(shape[:2] + (1,), name="mask")
    inputs = {"image": image, "mask": mask}
    x = keras.layers.Rescaling(input_scale, name="scale")(image) if input_scale is not None else image
    if feature_loss:
        if teacher is None:
            raise UserError("feature distillation needs a teacher in the graph (--teacher)")
        pairs = [(str(s), str(t)) for s, t in feature_layers]
        if not pairs:
            raise ValueError("feature distillation needs at least one (student layer, teacher layer) pair")
        check_feature_layers(student, teacher.feature_teacher(), pairs)
        z, *s_feats = features_model(student, [s for s, _ in pairs])(x)
        soft, t_feats = teacher.soft_target_and_features(x, temperature, [t for _, t in pairs])
        parts = [mask, z, soft]
    else:
        parts = [mask, logits_model(student)(x)]
        if teacher is not None:
            extra, soft = teacher.soft_target(x, temperature)
            inputs.update(extra)
            parts.append(soft)
    # float32 under mixed precision too
    loss = DistillationLoss(lam, temperature, scale, dice=dice, hard_loss=hard_loss, name="loss", dtype="float32")
    out = loss(parts)
    if feature_loss:
        feats = [feature_loss_layer(feature_loss, f"feature_loss{i}")([s, t]) for i, (s, t) in enumerate(zip(s_feats, t_feats))]
        out = AddFeatureTerm(feature_weight, name="feature_total", dtype="float32")([out, *feats])
    graph = keras.Model(inputs, out, name="train_graph")
    check_unique_variables(graph)
    return graph
