"""The one place that names a run: `RunSpec` gives a run's directory name and its human label.

Used by distill_train.py (student/train.py), the sweep, the results table and the plots. Plain Python
(no Keras), so the sweep, `--list` and the results table start at once.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from common.choices import DEFAULT_DEPTH, default_decoder

# --feature-layers when not given: the students' and teachers' 1/2-resolution decoder stage (unet, sepunet, mbv2cat, mbv2add)
DEFAULT_FEATURE_LAYERS = ("dec1_out:dec1_out",)
_MODEL = r"[a-z][a-z0-9]*\d+(?:d\d+)?"  # a model name of models.registry: unet8, resunet8, unet6d3 (not unet4_bilinear)
KINDS = re.compile(rf"((?:{_MODEL}_)+{_MODEL})(w[\d.\-]+)?")  # an ensemble of several kinds (distill.cache.ensemble_label)


def feature_pairs(items) -> list[tuple[str, str]]:
    """--feature-layers items "student_layer:teacher_layer" ("name" alone: the same name on both) -> [(student, teacher)].

    ValueError (naming the item) for an empty name or more than one ':'."""
    pairs = []
    for item in items:
        s, sep, t = str(item).partition(":")
        t = t if sep else s
        if not s or not t or ":" in t:
            raise ValueError(f"--feature-layers {item!r} must be STUDENT_LAYER:TEACHER_LAYER (or one layer name for both)")
        pairs.append((s, t))
    return pairs


def model_name(arch: str, base_filters, depth: int = DEFAULT_DEPTH, upsample: str = "") -> str:
    """A model's name: arch + width, then `d<depth>` and the decoder only where they are not the defaults.

    unet4, sepunet8, unet6d3 (depth 3), unet4_bilinear, mbv2add8_transpose.
    """
    name = f"{arch}{base_filters}" + (f"d{depth}" if depth != DEFAULT_DEPTH else "")
    if upsample and upsample != default_decoder(arch):
        name += f"_{upsample}"
    return name


@dataclass(frozen=True)
class RunSpec:
    """What a run is, in one place: its directory name and its human label.

    baseline:  unet4_baseline_s0                          "unet4 baseline"
    distilled: unet4_from_unet8x2_T2_l0.9_sT_unl_s0       "unet4 KD T=2 lam=0.9 s=T +unl ens2"
    teacher:   (named by --out)                           "teacher unet8"
    `teacher` is the soft target's label (distill.cache.ensemble_label: unet8, unet8x2, blackbox).
    """

    model: str  # the trained model's name: arch + width, e.g. unet4
    kind: str = "student"  # "student" or "teacher"
    teacher: str = ""  # the soft target's label; "" for a baseline without a teacher
    lam: float = 0.0
    temperature: float | str = 2.0  # a number, or "auto"
    scale: str = "T"
    unlabelled: bool = False
    flip: bool = True
    seed: int = 0
    resolved_temperature: float | None = None  # what "auto" resolved to (labels only)
    teacher_tta: bool = False  # flip-averaged soft targets (--teacher-tta)
    lovasz_epochs: int = 0  # last epochs with the Lovasz hinge as the hard term (--lovasz-epochs)
    tune_threshold: bool = False  # mask threshold picked on the validation split (--tune-threshold)
    n_unlabelled: int = 16  # unlabelled images per batch (--n-unlabelled); named only when not 16
    unlabelled_count: int = (
        0  # how many unlabelled images, named (_u18k) when --unlabelled is more than the data's own test images; 0 = not named
    )
    feature_loss: str = ""  # feature distillation (--feature-loss fitnets | at | cwd); "" = off, not named
    feature_weight: float = 1.0  # its weight (--feature-weight), named with it: _fitnets1, _cwd0.5
    feature_layers: tuple = DEFAULT_FEATURE_LAYERS  # matched stage pairs (--feature-layers), named only when not the default
    augment: str = "flip"  # --augment: "strong" (shifts, zoom, brightness/contrast) is named _aug; "flip" is not named
    mixup: float = 0.0  # --mixup alpha of the unlabelled images, named _mix0.2 when > 0 (only with unlabelled images)
    precision: str = "float32"  # --precision: mixed_bfloat16 is named _bf16; float32 is not named

    @property
    def extras(self) -> tuple[str, str]:
        """(name suffix, label suffix) of the options that are off by default."""
        parts = [("tta", "+tta")] if self.teacher_tta and self.distilled else []
        parts += [self.feature_tag] if self.feature_loss and self.kind == "student" else []
        parts += [(f"lov{self.lovasz_epochs}", f"+lovasz{self.lovasz_epochs}")] if self.lovasz_epochs else []
        parts += [("thr", "+thr")] if self.tune_threshold else []
        parts += [("aug", "+aug")] if self.augment == "strong" else []
        parts += [(f"mix{self.mixup:g}", f"+mixup{self.mixup:g}")] if self.mixup and self.unlabelled else []
        parts += [("bf16", "+bf16")] if self.precision == "mixed_bfloat16" else []
        return "".join("_" + n for n, _ in parts), "".join(" " + lab for _, lab in parts)

    @property
    def feature_tag(self) -> tuple[str, str]:
        """Feature distillation in names and labels: ("fitnets1", "+fitnets w=1"); the stage pairs when not the default
        ("at0.5_dec2+mid-dec1" for dec2_out:dec2_out and mid_out:dec1_out, "+at w=0.5 [dec2_out, mid_out:dec1_out]")."""
        name, label = f"{self.feature_loss}{self.feature_weight:g}", f"+{self.feature_loss} w={self.feature_weight:g}"
        pairs = feature_pairs(self.feature_layers)
        if pairs != feature_pairs(DEFAULT_FEATURE_LAYERS):
            short = [(s.removesuffix("_out"), t.removesuffix("_out")) for s, t in pairs]
            name += "_" + "+".join(s if s == t else f"{s}-{t}" for s, t in short)
            label += " [" + ", ".join(s if s == t else f"{s}:{t}" for s, t in pairs) + "]"
        return name, label

    def count_tag(self, sep: str) -> str:
        """The unlabelled images' count in names ("_u18k") and labels (" 18k"); "" when not named."""
        return sep + count_label(self.unlabelled_count) if self.unlabelled and self.unlabelled_count else ""

    @property
    def distilled(self) -> bool:
        """A student with a teacher: a soft term (lam > 0) or feature distillation (which may run at lam = 0)."""
        return self.kind == "student" and (self.lam > 0 or bool(self.feature_loss))

    @property
    def name(self) -> str:
        if self.kind == "teacher":
            return f"{self.model}_teacher_s{self.seed}"
        flip = ("" if self.flip else "_noflip") + self.extras[0]
        if not self.distilled:
            return f"{self.model}_baseline{flip}_s{self.seed}"
        T = "auto" if self.temperature == "auto" else f"{float(self.temperature):g}"
        unl = ("_unl" + ("" if self.n_unlabelled == 16 else str(self.n_unlabelled)) + self.count_tag("_u")) if self.unlabelled else ""
        return f"{self.model}_from_{self.teacher}_T{T}_l{self.lam:g}_s{self.scale}{unl}{flip}_s{self.seed}"

    @property
    def label(self) -> str:
        if self.kind == "teacher":
            return f"teacher {self.model}"
        flip = ("" if self.flip else " noflip") + self.extras[1]
        if not self.distilled:
            return f"{self.model} baseline{flip}"
        if self.temperature == "auto":
            T = f"auto({self.resolved_temperature:.2f})" if self.resolved_temperature is not None else "auto"
        else:
            T = f"{float(self.temperature):g}"
        m = re.search(r"x(\d+)(w[\d.\-]+)?$", self.teacher)  # unet8x2: two of one kind
        kinds = KINDS.fullmatch(self.teacher)  # unet16_resunet8: one of each kind
        n, w = (m.group(1), m.group(2)) if m else (kinds.group(1).count("_") + 1, kinds.group(2)) if kinds else (0, "")
        ens = (f" ens{n}" + (" weighted" if w else "")) if n else ""
        return (
            f"{self.model} KD T={T} lam={self.lam:g} s={self.scale}"
            + ((" +unl" + ("" if self.n_unlabelled == 16 else str(self.n_unlabelled)) + self.count_tag(" ")) if self.unlabelled else "")
            + ens
            + (" blackbox" if self.teacher == "blackbox" else "")
            + flip
        )

    @property
    def recipe(self) -> str:
        """The label of how the student is taught, whatever teaches it: the label without its soft target's part (the
        teacher, an ensemble, flip-averaged targets), so students of unet8, unet16 and a flip-averaged unet8x2 ensemble
        with one recipe share it (experiments.epochs lines them up against their teachers' scores)."""
        return dataclasses.replace(self, teacher="", teacher_tta=False).label if self.kind == "student" else self.label

    @classmethod
    def from_config(
        cls, cfg: dict, teacher: str = "", kind: str = "student", resolved_temperature=None, unlabelled_count: int = 0
    ) -> RunSpec:
        """From a config (a dataclass or its config.json dict) and the soft target's label.

        unlabelled_count: the number of --unlabelled images; named only when `names_unlabelled_count(cfg)`."""
        cfg = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
        model = model_name(cfg.get("arch", "unet"), cfg.get("base_filters"), cfg.get("depth", DEFAULT_DEPTH), cfg.get("upsample", ""))
        if kind == "teacher":
            return cls(model, "teacher", seed=cfg.get("seed", 0))
        lam = float(cfg.get("lam", 0.0))
        feature_loss = str(cfg.get("feature_loss", "") or "")
        return cls(
            model,
            kind,
            teacher if lam > 0 or feature_loss else "",
            lam,
            cfg.get("temperature", 2.0) if lam > 0 else 2.0,
            cfg.get("scale", "T") if lam > 0 else "T",
            bool(cfg.get("unlabelled")),
            bool(cfg.get("flip", True)),
            cfg.get("seed", 0),
            resolved_temperature,
            bool(cfg.get("teacher_tta", False)),
            int(cfg.get("lovasz_epochs", 0) or 0),
            bool(cfg.get("tune_threshold", False)),
            int(cfg.get("n_unlabelled", 16)),
            int(unlabelled_count) if names_unlabelled_count(cfg) else 0,
            feature_loss=feature_loss,
            feature_weight=float(cfg.get("feature_weight", 1.0)),
            feature_layers=tuple(cfg.get("feature_layers") or DEFAULT_FEATURE_LAYERS),
            augment=str(cfg.get("augment", "flip") or "flip"),
            mixup=float(cfg.get("mixup", 0.0) or 0.0),
            precision=str(cfg.get("precision", "float32") or "float32"),
        )

    @classmethod
    def from_run_dir(cls, run: Path) -> RunSpec:
        """From a finished run dir's config.json and metrics.json (runs of earlier versions included)."""
        cfg = json.loads((Path(run) / "config.json").read_text())
        met = json.loads((Path(run) / "metrics.json").read_text())
        if run_kind(run, cfg) == "teacher":
            return cls.from_config(cfg, kind="teacher")
        teacher = met.get("teacher", {}).get("label")
        if teacher is None:  # a run of an earlier version: the label from the number of teachers and the cache
            n = len(cfg.get("teacher") or [])
            teacher = "blackbox" if cfg.get("teacher_cache") and not n else f"teacher{'x' + str(n) if n > 1 else ''}"
        T = met.get("temperature")
        return cls.from_config(
            cfg,
            teacher,
            resolved_temperature=float(T) if isinstance(T, (int, float)) else None,
            unlabelled_count=met.get("unlabelled_images", 0),
        )


def run_kind(run, cfg: dict) -> str:
    """A run's kind, "teacher" or "student": a teacher run has teacher.keras, or (a published copy without model files)
    a config without the students' `lam`."""
    return "teacher" if (Path(run) / "teacher.keras").exists() or "lam" not in cfg else "student"


def names_unlabelled_count(cfg: dict) -> bool:
    """Whether a run's name says how many unlabelled images it had: yes unless --unlabelled is just --data (its own test images).

    So `--unlabelled DATA` keeps the names of earlier versions (unet4_..._unl_s0), and every other set of folders is
    told apart by its size (unet4_..._unl_u18k_s0 with the 17,000 extra Kaggle test images)."""
    unl = cfg.get("unlabelled") or ()
    if not isinstance(unl, (list, tuple)):  # a bare flag (tests, hand-made configs): no folders to count
        return False
    unl = [str(u) for u in unl]
    return bool(unl) and unl != [str(cfg.get("data", ""))]


def count_label(n: int) -> str:
    """18000 -> "18k", 1000 -> "1k", 1500 -> "1500"."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)
