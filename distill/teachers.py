"""The one soft-target path: every kind of teacher -> teacher logits -> the head swap sigmoid(logits / T).

Teacher kinds, all turned into *teacher logits* by `TeacherLogits`:
- in-graph models: one frozen teacher, or an ensemble whose logits are averaged (optionally weighted)
  by a `WeightedSum` layer, computed in the training graph on the student's own input;
- a cache (`python -m teacher.cache`): the teachers' logits for every image and its flip, computed
  once and fed to the graph as the input "teacher_logits" (an ensemble is averaged at cache time);
- black-box probability maps: a cache built with `teacher.cache --from-probabilities`
  (logit = log(p / (1 - p))).

The design card's head swap is `head_swap`: the teacher's output layer is replaced by
`TemperatureSigmoid(T)` on its `logits` layer, and that head produces the soft target for every kind,
cached logits included. `soft_teacher` builds the head-swapped frozen teacher as a model of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops
from tqdm import tqdm

from common.cli import UserError
from distill.cache import TeacherCache, ensemble_label, normalise_weights
from models.files import load_keras
from models.predict import predict
from models.registry import features_model, logits_model
from pi.tgs_common import postprocess


@keras.saving.register_keras_serializable(package="kdseg")
class TemperatureSigmoid(keras.layers.Layer):
    """sigmoid(logits / T): the soft output of student and head-swapped teacher."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def call(self, logits):
        return ops.sigmoid(logits / self.temperature)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="kdseg")
class WeightedSum(keras.layers.Layer):
    """sum_i w_i * x_i: the averaged logits of a teacher ensemble (weights sum to 1)."""

    def __init__(self, weights=(0.5, 0.5), **kwargs):
        super().__init__(**kwargs)
        self.w = [float(v) for v in weights]

    def call(self, inputs):
        return sum(w * x for w, x in zip(self.w, inputs))

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "weights": self.w}


def load_teacher(path, scope: str = "") -> keras.Model:
    """A trained teacher .keras file (must have a `logits` layer).

    scope: a name scope for its variables' paths ("teacher0/enc0_conv1/kernel"; layer names stay as saved).
    A teacher that will share a training graph with a student needs one: both come from the same builders,
    so their variables would have the same paths, and the torch backend tracks a model's variables by path
    (one entry per path): the student's fell out of the graph's torch parameters, `zero_grad` never reached
    them, and their gradients summed over every step (distill.graph.check_unique_variables).
    """
    if not scope:
        return load_keras(path, "teacher", need_logits=True)
    with keras.name_scope(scope):
        return load_keras(path, "teacher", need_logits=True)


def teacher_logits_model(teachers, weights=None) -> keras.Model:
    """Frozen model: image -> teacher logits (the mean, or weighted mean, of an ensemble's logits)."""
    teachers = list(teachers)
    if len(teachers) == 1 and not weights:
        model = logits_model(teachers[0], name="teacher_logits")
    else:
        shapes = {tuple(t.inputs[0].shape[1:]) for t in teachers}
        if len(shapes) > 1:
            raise UserError(f"the ensemble's teachers take different input sizes: {sorted(shapes)}")
        w = normalise_weights(weights or [1.0] * len(teachers))
        if len(w) != len(teachers):
            raise UserError(f"{len(w)} ensemble weights for {len(teachers)} teachers")
        image = keras.Input(shapes.pop(), name="image")
        parts = [logits_model(t, name=f"teacher{i}_logits")(image) for i, t in enumerate(teachers)]
        model = keras.Model(image, WeightedSum(w, name="ensemble_logits")(parts), name="teacher_logits")
    model.trainable = False
    return model


def head_swap(teacher_logits, temperature: float):
    """The design card's head: the teacher's output replaced by sigmoid(logits / T), named `teacher_soft`."""
    return TemperatureSigmoid(temperature, name="teacher_soft", dtype="float32")(teacher_logits)


def soft_teacher(teachers, temperature: float, weights=None) -> keras.Model:
    """The head-swapped frozen teacher as a model: image -> sigmoid(teacher logits / T)."""
    if not temperature > 0:
        raise UserError(f"temperature T={temperature} must be > 0")
    teachers = teachers if isinstance(teachers, (list, tuple)) else [teachers]
    logits = teacher_logits_model(teachers, weights)
    image = keras.Input(tuple(logits.inputs[0].shape[1:]), name="image")
    model = keras.Model(image, head_swap(logits(image), temperature), name="soft_teacher")
    model.trainable = False
    return model


def ensemble_logits(teachers, x: np.ndarray, batch_size: int = 64, weights=None) -> np.ndarray:
    """Mean (or weighted mean) logits of the teachers for x (N, S, S, 1) -> (N, S, S) float32, with a progress bar."""
    heads = [logits_model(t) for t in teachers]
    w = normalise_weights(weights) if weights else None
    out = np.empty(x.shape[:3], np.float32)
    for s in tqdm(range(0, len(x), batch_size), desc="teacher logits", unit="batch", leave=False):
        xb = x[s : s + batch_size]
        out[s : s + batch_size] = np.average([predict(h, xb, batch_size)[..., 0] for h in heads], axis=0, weights=w)
    return out


@dataclass
class TeacherLogits:
    """Where a student's soft target comes from: in-graph teacher model(s) or a cache, as teacher logits.

    label names the soft target in run names (unet8, unet8x2, blackbox); `soft_target` gives the
    training graph sigmoid(teacher logits / T) through the head swap (and any extra input it needs);
    `val_logits` gives the teacher logits on the validation images for scoring and calibrating it.
    """

    label: str
    models: list = field(default_factory=list)
    weights: list | None = None
    cache: TeacherCache | None = None
    paths: list = field(default_factory=list)

    @classmethod
    def from_models(cls, paths, weights=None, input_size: int | None = None) -> TeacherLogits:
        models = [load_teacher(p, scope=f"teacher{i}") for i, p in enumerate(paths)]  # in-graph: own variable paths
        for path, t in zip(paths, models):
            shape = tuple(t.inputs[0].shape[1:])
            if input_size is not None and shape != (input_size, input_size, 1):
                raise UserError(
                    f"teacher {path} takes input {shape}, the student's --input-size {input_size} gives {(input_size, input_size, 1)}"
                )
        w = normalise_weights(weights) if weights else None
        return cls(ensemble_label([m.name for m in models], w), models=models, weights=w, paths=[str(p) for p in paths])

    @classmethod
    def from_cache(cls, path, spec: dict, teachers=(), weights=None, tta: bool = False) -> TeacherLogits:
        cache = TeacherCache(path, tta=tta)  # tta: flip-averaged logits (--teacher-tta)
        cache.check(list(teachers), spec, weights)
        return cls(cache.label, cache=cache, weights=cache.weights or None, paths=[str(t) for t in teachers])

    @property
    def kind(self) -> str:
        return "cache" if self.cache is not None else "model"

    @property
    def n_teachers(self) -> int:
        return len(self.cache.meta["teachers"]) if self.cache is not None else len(self.models)

    def describe(self) -> str:
        if self.cache is not None:
            return f"{self.label} from cache {self.cache.path}" + (", flip-averaged (--teacher-tta)" if self.cache.tta else "")
        return f"{self.label}, {sum(m.count_params() for m in self.models):,} params, in the graph"

    def soft_target(self, image, temperature: float) -> tuple[dict, object]:
        """(extra graph inputs, soft-target tensor) for the training graph whose image input is `image`.

        Both kinds end in the same head swap: in-graph teachers as the frozen head-swapped teacher
        model (`soft_teacher`), a cache as its logits input "teacher_logits" -> `head_swap`.
        """
        if self.cache is not None:
            t = keras.Input(tuple(image.shape[1:3]) + (1,), name="teacher_logits")
            return {"teacher_logits": t}, head_swap(t, temperature)
        return {}, soft_teacher(self.models, temperature, self.weights)(image)

    def feature_teacher(self) -> keras.Model:
        """The one in-graph teacher whose features feature distillation matches; UserError for a cache or an ensemble."""
        if self.cache is not None or len(self.models) != 1:
            raise UserError("feature distillation needs one teacher in the graph (--teacher; not --teacher-cache, not an ensemble)")
        return self.models[0]

    def soft_target_and_features(self, image, temperature: float, layer_names) -> tuple[object, list]:
        """(soft target, teacher features) for feature distillation (--feature-loss): one frozen teacher in the graph,
        on the student's own input, gives both in one pass: its logits through the head swap (as `soft_target`) and
        the outputs of its stage layers `layer_names`. A cache holds no features: feature distillation needs the model."""
        model = features_model(self.feature_teacher(), layer_names, name="teacher_features")
        model.trainable = False
        logits, *feats = model(image)
        return head_swap(logits, temperature), feats

    def val_logits(self, vx: np.ndarray, cached_views, spec: dict) -> np.ndarray:
        """The soft target's logits on the validation images, original 101x101 pixels."""
        if self.cache is not None:
            return postprocess(cached_views[:, 0, ..., 0].astype(np.float32), spec)
        return postprocess(ensemble_logits(self.models, vx, weights=self.weights), spec)
