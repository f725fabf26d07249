"""The device report's decision, with the probes faked: never train on the CPU by mistake."""

import pytest

from common.cli import UserError
from common.devices import check_accelerator, describe

CPU = [{"kind": "cpu", "name": "x86_64"}]
GPU = [{"kind": "gpu", "name": "NVIDIA H100"}, {"kind": "gpu", "name": "NVIDIA H100"}]


@pytest.mark.parametrize(
    "accelerator,devices,nvidia,refused",
    [
        ("auto", CPU, False, None),  # a CPU machine: train on the CPU
        ("auto", GPU, True, None),  # the GPU is seen: fine
        ("auto", CPU, True, "requirements-gpu.txt"),  # GPU present, CPU-only jax: stop, say what to install
        ("cpu", CPU, True, None),  # ... unless the CPU is intended
        ("gpu", GPU, True, None),
        ("gpu", CPU, True, "requirements-gpu.txt"),
        ("gpu", CPU, False, "no NVIDIA GPU"),
        ("tpu", CPU, False, "--accelerator 'tpu'"),
    ],
)
def test_accelerator_decision(accelerator, devices, nvidia, refused):
    if refused is None:
        check_accelerator(accelerator, "jax", devices, nvidia)
    else:
        with pytest.raises(UserError, match=refused.replace("(", r"\(")):
            check_accelerator(accelerator, "jax", devices, nvidia)


def test_describe_counts_devices():
    assert describe(GPU) == "2 x gpu (NVIDIA H100)"
    assert describe(CPU) == "1 x cpu (x86_64)"
