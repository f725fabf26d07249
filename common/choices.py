"""Every fixed set of values a flag or a preset takes, defined once and Keras-free.

The model registry (models.registry), the losses (distill.losses), the configs' `--help` choices and checks
(training.config, student.config, teacher.config), run names (training.naming.RunSpec) and the sweep's plan all
read these, so a preset is checked at plan time against exactly what the scripts accept, without importing Keras.

To add an architecture: one line in ARCHITECTURES here, and its builder in models/ (models/registry.py refuses to
import while the two disagree). To add a feature loss: its name in FEATURE_LOSSES, its layer in distill/losses.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    """What is known of an architecture before any Keras is imported."""

    decoder: str  # the decoder's x2 upsampling when --upsample is not given: "transpose" or "bilinear"
    min_depth: int = 1  # fewest poolings it builds with
    about: str = ""


ARCHITECTURES = {
    "unet": Arch("transpose", 1, "plain U-Net (full 3x3 convs); --depth 3 with a larger width is the wide-shallow variant"),
    "resunet": Arch("transpose", 1, "residual U-Net with scSE attention (a teacher candidate)"),
    "sepunet": Arch("bilinear", 1, "depthwise-separable U-Net"),
    "mbv2cat": Arch("bilinear", 1, "MobileNetV2 inverted-residual encoder, light decoder, concat skips"),
    "mbv2add": Arch("bilinear", 1, "the same with add skips"),
    "lraspp": Arch("bilinear", 2, "MobileNetV2 encoder, LR-ASPP-style head"),
}
DECODERS = ("transpose", "bilinear")  # --upsample ("" = the architecture's decoder)
DEFAULT_DEPTH = 4

RESIZE_MODES = ("pad", "resize")  # --resize-mode
MONITORS = ("mean_iou", "kaggle_map", "salt_iou")  # --monitor
BACKENDS = ("torch", "tensorflow", "jax")  # Keras backends, in the order common/backend.py prefers them
PRECISIONS = ("float32", "mixed_bfloat16")  # --precision
ACCELERATORS = ("auto", "gpu", "cpu")  # --accelerator
TEACHER_LOSSES = ("bce", "bce_dice")  # teacher.train --loss
SCALE_RULES = ("T", "T2", "1")  # --scale, s(T) of the soft term
HARD_LOSSES = ("bce", "lovasz")  # the hard term (Lovasz for the last --lovasz-epochs)
FEATURE_LOSSES = ("fitnets", "at", "cwd")  # --feature-loss
AUGMENTS = ("flip", "strong")  # --augment: horizontal flips only; + shifts, zoom, brightness/contrast


def arch_names() -> list[str]:
    return sorted(ARCHITECTURES)


def default_decoder(arch: str) -> str:
    """The decoder an architecture builds when --upsample is not given ("transpose" for a name not registered)."""
    return ARCHITECTURES[arch].decoder if arch in ARCHITECTURES else "transpose"


def check_arch(arch: str, input_shape, base_filters: int, depth: int, upsample: str | None = None) -> None:
    """Raise ValueError (one line, naming the valid choices) for settings no builder can make."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(arch_names())}")
    if upsample and upsample not in DECODERS:
        raise ValueError(f"upsample must be one of {', '.join(DECODERS)}, not {upsample!r}")
    if base_filters < 1:
        raise ValueError(f"{arch}: width (base filters) {base_filters} leaves a layer with no channels; it must be >= 1")
    low = ARCHITECTURES[arch].min_depth
    if depth < low:
        raise ValueError(f"{arch}: depth must be >= {low}, got {depth}")
    h, w = input_shape[:2]
    if h % 2**depth or w % 2**depth:
        raise ValueError(f"{arch}: input {h}x{w} is not divisible by 2**depth = {2**depth}")
