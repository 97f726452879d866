"""Which device trains, and the settings that pay off on it. The whole GPU path lives here.

On a GPU: mixed float16 where the GPU has tensor cores (compute capability 7.0 and up), XLA
compilation, and several steps per call to cut Python overhead. The project's machines have no
GPU, so this follows the TensorFlow and Keras documentation and is tested with the GPU plan's
settings on the CPU (docs/gpu.md says what is and is not verified). On the CPU all of that is off:
XLA made CPU training several times slower here, and float16 is emulated on CPUs. How many GPUs
train is the strategy's choice (distribution.py: mirrored over all of them under --strategy auto).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from app.scale import hardware


@dataclasses.dataclass(frozen=True)
class Plan:
    description: str  # what the start-up line says
    policy: str = "float32"  # the Keras dtype policy
    jit_compile: bool = False
    steps_per_execution: int = 1
    warning: str | None = None


def plan(precision: str = "auto") -> Plan:
    """How to train on what this process sees; `precision` other than "auto" is taken as given."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return cpu_plan(precision)
    _grow_memory_as_needed(gpus)
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = tuple(details.get("compute_capability") or (0, 0))
    return gpu_plan(details.get("device_name", gpus[0].name), capability, precision, len(gpus))


def cpu_plan(precision: str = "auto") -> Plan:
    warning = None
    if tf.test.is_built_with_cuda():
        # The known trap: -gpu images whose cuDNN does not match TensorFlow see no GPU at all.
        warning = ("this TensorFlow is built for CUDA but sees no GPU; if the host has one, run "
                   "`make gpu-check` and see docs/troubleshooting.md")
    policy = _cpu_policy() if precision == "auto" else precision
    return Plan(f"no GPU visible: training on CPU ({policy})", policy=policy,
                steps_per_execution=CPU_STEPS_PER_EXECUTION, warning=warning)


def gpu_plan(name: str, capability: tuple[int, int], precision: str = "auto", count: int = 1) -> Plan:
    """The settings on a GPU: plain data, so the tests train with them on the CPU."""
    if precision == "auto":
        # Tensor cores, which make float16 fast, arrived with compute capability 7.0 (Volta).
        precision = "mixed_float16" if capability >= (7, 0) else "float32"
    # How many of them train is the strategy's to say, on the same line (train.py).
    visible = f"{count} visible, " if count > 1 else ""
    return Plan(f"training on GPU {name} ({visible}compute capability {capability[0]}.{capability[1]}, "
                f"{precision}, XLA)", policy=precision, jit_compile=True,
                steps_per_execution=GPU_STEPS_PER_EXECUTION)


def _grow_memory_as_needed(gpus: list) -> None:
    """Take GPU memory as needed rather than all of it, so TensorBoard or a second run fits.

    Only possible before TensorFlow initialises the GPUs: where something ran on them first (the
    benchmark's reference run, a notebook), they keep the setting they were initialised with.
    """
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # "Physical devices cannot be modified after being initialized"
            return


# A CPU step of this model takes milliseconds, so Keras' per-step overhead hardly shows (several
# steps per execution measured no faster here); a GPU step takes well under one, so there the
# host round trip per step would dominate.
CPU_STEPS_PER_EXECUTION = 1
GPU_STEPS_PER_EXECUTION = 20


def _cpu_policy() -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32.

    Measured here (AVX512-BF16): 10 epochs 1.6 times faster at the same accuracy. Without those
    instructions bfloat16 is emulated and slower than float32.
    """
    return "mixed_bfloat16" if hardware.native_bfloat16() else "float32"


def report() -> None:
    """`make gpu-check`: what this TensorFlow was built for and what it sees."""
    build = tf.sysconfig.get_build_info()
    print(f"TensorFlow {tf.__version__}; built for CUDA {build.get('cuda_version', '-')}, "
          f"cuDNN {build.get('cudnn_version', '-')}" if build.get("is_cuda_build") else
          f"TensorFlow {tf.__version__}; a CPU-only build")
    current = plan()
    print(current.description)
    if current.warning:
        print(f"warning: {current.warning}")
    for gpu in tf.config.list_logical_devices("GPU"):
        with tf.device(gpu.name):
            total = float(tf.reduce_sum(tf.matmul(tf.ones([256, 256]), tf.ones([256, 256]))))
        print(f"{gpu.name}: a 256x256 matmul gives {total:.0f} (expected {256 ** 3})")
    print(f"dtype policy {current.policy}, XLA {'on' if current.jit_compile else 'off'}, "
          f"{current.steps_per_execution} steps per execution")


if __name__ == "__main__":
    report()
