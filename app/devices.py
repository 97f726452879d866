"""Which device trains, and the settings that pay off on it. The whole GPU path lives here.

On a GPU (none is available where this project is tested, so this follows the TensorFlow and
Keras documentation): mixed float16 where the GPU has tensor cores (compute capability 7.0 and
up), XLA compilation, and several steps per call to cut Python overhead. On the CPU all of that
is off: XLA made CPU training several times slower here, and float16 is emulated on CPUs.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Plan:
    description: str  # what the start-up line says
    mixed_precision: bool = False
    jit_compile: bool = False
    warning: str | None = None


def plan() -> Plan:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        warning = None
        if tf.test.is_built_with_cuda():
            # The known trap: -gpu images whose cuDNN does not match TensorFlow see no GPU at all.
            warning = ("this TensorFlow is built for CUDA but sees no GPU; if the host has one, run "
                       "`make gpu-check` and see 'No GPU visible' in the README")
        return Plan("no GPU visible: training on CPU", warning=warning)
    for gpu in gpus:
        # Take GPU memory as needed rather than all of it, so TensorBoard or a second run fits.
        tf.config.experimental.set_memory_growth(gpu, True)
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability") or (0, 0)
    name = details.get("device_name", gpus[0].name)
    extra = f" (+{len(gpus) - 1} more, unused)" if len(gpus) > 1 else ""
    return Plan(
        f"training on GPU {name}, compute capability {capability[0]}.{capability[1]}{extra}",
        mixed_precision=tuple(capability) >= (7, 0),
        jit_compile=True,
    )


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
    print(f"mixed precision: {'on' if current.mixed_precision else 'off'}, "
          f"XLA: {'on' if current.jit_compile else 'off'}")


if __name__ == "__main__":
    report()
