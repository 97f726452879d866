"""What this CPU is and which of its instruction sets matter for training speed (no TensorFlow).

Read from /proc/cpuinfo; elsewhere (not Linux) the answers are empty.
"""

from __future__ import annotations

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
