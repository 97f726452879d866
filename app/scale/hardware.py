"""What this machine has, read without TensorFlow: the CPU and the instruction sets that matter for
training speed (from /proc/cpuinfo; elsewhere than Linux the answers are empty), and the NVIDIA
GPUs handed to this container."""

from __future__ import annotations

import os
import re

# The instruction sets that change this model's speed: vector width, and native bfloat16.
RELEVANT = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
_BFLOAT16 = {"avx512_bf16", "amx_bf16"}


def _field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.split(":")[0].strip() == name), "")
    except OSError:
        return ""
    return line.split(":", 1)[1].strip() if ":" in line else ""


def model_name() -> str:
    return _field("model name") or "unknown CPU"


def flags() -> set[str]:
    return set(_field("flags").split())


def native_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 itself (AVX512-BF16 or AMX); elsewhere it is emulated."""
    return bool(_BFLOAT16 & flags())


def description() -> str:
    found = " ".join(f for f in RELEVANT if f in flags()) or "no AVX2"
    return f"{model_name()} ({found}; native bfloat16: {'yes' if native_bfloat16() else 'no'})"


def count_gpus(dev: str = "/dev") -> int:
    """The NVIDIA GPUs handed to this container: one device node /dev/nvidiaN each."""
    try:
        return sum(1 for name in os.listdir(dev) if re.fullmatch(r"nvidia[0-9]+", name))
    except OSError:
        return 0
