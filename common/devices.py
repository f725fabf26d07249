"""Which devices will a run train on? A device report, and a refusal to train on the CPU by mistake.

On a GPU box, `pip install -r requirements.txt` alone gives JAX's CPU build: a run would train for
hours on the CPU after one warning line among the start-up logs. So every training script reports
the backend and its devices before the first epoch (and writes them into config.json), and stops if
the machine has an NVIDIA GPU (`nvidia-smi` or /dev/nvidia0) that the backend does not see, unless
`--accelerator cpu` says the CPU is intended.

    --accelerator auto   train on what the backend sees; refuse when an NVIDIA GPU is present but unseen
    --accelerator gpu    require a GPU
    --accelerator cpu    the CPU is intended (no check)
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from common.choices import ACCELERATORS
from common.cli import UserError

GPU_INSTALL = (
    "pip install -r requirements.txt -r requirements-gpu.txt (JAX with CUDA 12) and run with KERAS_BACKEND=jax, "
    "or pass --accelerator cpu to train on the CPU"
)


def nvidia_present() -> bool:
    """An NVIDIA GPU on this machine, whatever the Python packages can see."""
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def backend_devices(backend: str) -> list[dict]:
    """[{"kind": "gpu"|"cpu"|..., "name": ...}] that the Keras backend will compute on."""
    if backend == "jax":
        import jax

        return [{"kind": d.platform, "name": getattr(d, "device_kind", str(d))} for d in jax.devices()]
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return [{"kind": "gpu", "name": torch.cuda.get_device_name(i)} for i in range(torch.cuda.device_count())]
        return [{"kind": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}]
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return [{"kind": "gpu", "name": tf.config.experimental.get_device_details(g).get("device_name", g.name)} for g in gpus]
        return [{"kind": "cpu", "name": platform.processor() or platform.machine()}]
    return [{"kind": "cpu", "name": platform.machine()}]


def check_accelerator(accelerator: str, backend: str, devices: list[dict], has_nvidia: bool) -> None:
    """Refuse (UserError) a run that would not train where the user expects; pure, so tests fake the probes."""
    if accelerator not in ACCELERATORS:
        raise UserError(f"--accelerator {accelerator!r} must be one of {', '.join(ACCELERATORS)}")
    sees_gpu = any(d["kind"] == "gpu" for d in devices)
    if accelerator == "gpu" and not sees_gpu:
        raise UserError(
            f"--accelerator gpu: the {backend} backend sees no GPU (only {describe(devices)}); "
            + (GPU_INSTALL if has_nvidia else "this machine has no NVIDIA GPU (no nvidia-smi, no /dev/nvidia0)")
        )
    if accelerator == "auto" and has_nvidia and not sees_gpu:
        raise UserError(f"this machine has an NVIDIA GPU but the {backend} backend sees only the CPU: {GPU_INSTALL}")


def describe(devices: list[dict]) -> str:
    kinds = {}
    for d in devices:
        kinds.setdefault((d["kind"], d["name"]), 0)
        kinds[(d["kind"], d["name"])] += 1
    return ", ".join(f"{n} x {k} ({name})" for (k, name), n in kinds.items())


def device_report(accelerator: str = "auto") -> dict:
    """Probe, check and print the devices; returns what config.json records."""
    import keras

    backend = keras.backend.backend()
    devices = backend_devices(backend)
    check_accelerator(accelerator, backend, devices, nvidia_present())
    print(
        f"devices: keras {backend} backend on {describe(devices)}"
        + (f"; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}" if "OMP_NUM_THREADS" in os.environ else ""),
        flush=True,
    )
    return {
        "backend": backend,
        "accelerator": accelerator,
        "devices": devices,
        "count": len(devices),
        "kind": devices[0]["kind"] if devices else "none",
    }
