"""Data-parallel training on several devices (`--devices N` of teacher.train and distill_train.py).

    KERAS_BACKEND=jax python distill_train.py ... --devices 8        # 8 GPUs, Keras' distribution API
    KERAS_BACKEND=tensorflow python -m teacher.train ... --devices 2  # tf.distribute.MirroredStrategy

Each batch of `batch_size` images is split evenly across the N replicas (so keep batch_size a
multiple of N; scale it and the learning rate together for more throughput). JAX (the fast GPU
path) uses `keras.distribution.DataParallel`; TensorFlow uses `tf.distribute.MirroredStrategy`;
the torch backend trains on one device and refuses N > 1. On a machine with fewer accelerators
than N, the CPU is split into N logical devices, which trains correctly but no faster: that is how
the tests check this code without GPUs (for JAX, set
XLA_FLAGS=--xla_force_host_platform_device_count=N before starting Python).
"""

from __future__ import annotations

import contextlib

import keras

from common.cli import UserError


def data_parallel(devices: int, batch_size: int):
    """Set up N-way data parallelism; returns (scope to build, compile and fit the models in, info dict).

    Call before any model is built (and, for TensorFlow, before any TensorFlow op has run).
    """
    if devices < 1:
        raise UserError(f"--devices must be >= 1, got {devices}")
    if devices == 1:
        return contextlib.nullcontext(), {"replicas": 1, "devices": []}
    if batch_size % devices:
        raise UserError(f"--batch-size {batch_size} must be a multiple of --devices {devices} (each replica gets an equal share)")
    backend = keras.backend.backend()
    if backend == "jax":
        found = keras.distribution.list_devices()
        if len(found) < devices:
            raise UserError(
                f"--devices {devices}: jax sees only {len(found)} device(s) ({', '.join(found)}); on a CPU start with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={devices}"
            )
        used = found[:devices]
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=used))
        return contextlib.nullcontext(), {"replicas": devices, "devices": used, "api": "keras.distribution.DataParallel"}
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) < devices:
            cpu = tf.config.list_physical_devices("CPU")[0]
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
            except RuntimeError:  # the runtime is already initialised: keep what exists
                pass
            used = [d.name for d in tf.config.list_logical_devices("CPU")][:devices]
        else:
            used = [d.name for d in tf.config.list_logical_devices("GPU")][:devices]
        if len(used) < devices:
            raise UserError(f"--devices {devices}: tensorflow sees only {len(used)} device(s)")
        strategy = tf.distribute.MirroredStrategy(used)
        return strategy.scope(), {"replicas": strategy.num_replicas_in_sync, "devices": used, "api": "tf.distribute.MirroredStrategy"}
    raise UserError(f"--devices {devices} needs KERAS_BACKEND=jax (GPU boxes) or tensorflow; the {backend} backend trains on one device")


def describe(parallel: dict) -> str:
    """The start-up line's data-parallel part ("" on one device)."""
    return f"; data parallel over {parallel['replicas']} devices ({parallel['api']})" if parallel["replicas"] > 1 else ""
