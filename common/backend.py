"""Pick the Keras backend before `import keras`: `choose_backend` below is where the default is chosen.

The order: KERAS_BACKEND if the user set it, else the backend `python -m benchmarks.train_speed --save-default`
measured fastest on this CPU (saved_backend: a small JSON file, ignored on another CPU), else torch if it is
installed, else tensorflow, else jax.
Which CPU backend trains fastest depends on the machine: torch was faster on the machine of 2026-11-27;
on the AMD EPYC AVX-512 machine of 2026-11-29 `python -m benchmarks.train_speed` measured TensorFlow
1.4-1.7x faster per training step for every student shape (unet4: 144.5 vs 100.5 img/s, 1 thread) and real
3-epoch runs 1.1-1.3x faster. On the AMD EPYC with AVX2 only of 2026-12-07 torch float32 was the fastest
for the unet4 student again, and no backend, bfloat16 or XLA setting was 1.5x faster for any shape; on the Intel Xeon
with AMX of 2026-12-07 TensorFlow was again the fastest for every shape (1.46-1.74x per step), and its 15-epoch
students scored as torch's at 3 seeds (docs/PERFORMANCE.md). Since the fastest backend differs from CPU to CPU,
`--save-default` records the one measured on this CPU; the fallback stays torch, on which the results were trained.
On a GPU box JAX is the fast path. Export always needs
tensorflow (`require_tensorflow`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
from pathlib import Path

from common.choices import BACKENDS, PRECISIONS
from common.cli import UserError

# where --save-default keeps this machine's measured backend (SEG_DISTILL_BACKEND_FILE overrides it: tests, shared homes)
SAVED_FILE = "~/.config/seg-distill/backend.json"


def saved_path() -> Path:
    return Path(os.environ.get("SEG_DISTILL_BACKEND_FILE") or SAVED_FILE).expanduser()


def cpu_id() -> str:
    """This CPU, as a short hash of its model name and instruction-set flags (/proc/cpuinfo; elsewhere platform's
    processor and machine): a saved backend applies to the CPU it was measured on, not to the next VM's."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keys = ("model name", "flags", "Features", "CPU part")  # x86 and ARM spellings
        text = "\n".join(sorted({ln.strip() for ln in lines if ln.split(":")[0].strip() in keys}))
    except OSError:
        text = ""
    text = text or f"{platform.processor()} {platform.machine()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def saved_backend() -> str | None:
    """The backend `benchmarks.train_speed --save-default` measured fastest on this CPU, if it saved one for this CPU and
    that backend is installed; else None (an unreadable file too: the default order applies)."""
    try:
        saved = json.loads(saved_path().read_text())
        backend = saved["backend"] if saved.get("cpu") == cpu_id() else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return backend if backend in BACKENDS and importlib.util.find_spec(backend) is not None else None


def choose_backend() -> str:
    """Set KERAS_BACKEND (if unset) to this CPU's measured backend (saved_backend) or else the first installed of
    torch, tensorflow, jax (the module doc says why), and return it."""
    if "KERAS_BACKEND" not in os.environ:
        measured = saved_backend()
        for name in (measured,) if measured else BACKENDS:
            if importlib.util.find_spec(name) is not None:
                os.environ["KERAS_BACKEND"] = name
                break
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pin_threads()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def pin_threads() -> None:
    """OMP_NUM_THREADS=N sizes every backend's CPU thread pools: torch and XLA's follow it, TensorFlow's own two pools
    (intra- and inter-op) do not, so they are set here, before TensorFlow starts (two 1-thread training streams on a
    2-core CPU then really use one core each). No-op without OMP_NUM_THREADS or on another backend."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if os.environ.get("KERAS_BACKEND") == "tensorflow" and threads.isdigit() and int(threads) > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))


def require_tensorflow() -> None:
    """Force the tensorflow backend (export needs it); must run before keras is imported."""
    import sys

    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != "tensorflow":
        raise RuntimeError("keras was imported with another backend before require_tensorflow()")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def set_precision(precision: str) -> None:
    """Keras' global dtype policy for the models built next: float32, or mixed_bfloat16 (bfloat16 compute,
    float32 variables; the loss layer and the teacher head stay float32). Call before building models."""
    import keras  # here, not at the top: the backend is chosen before keras is imported

    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r} must be one of {', '.join(PRECISIONS)}")
    keras.config.set_dtype_policy(precision)
