"""Scaling out with tf.distribute: which strategy trains, over how many replicas, and who writes.

--strategy auto picks multi-worker when TF_CONFIG names more than one task (the Kubeflow training
operator and the compose multiworker profile set it), mirrored when this machine has more than
one GPU, else one device. --batch-size stays the global batch, split across the replicas.

Only one process writes (the run folder, logs, checkpoints, exports, metrics.json): the one
tf.distribute names (`extended.should_checkpoint`), which is the `chief` task where the cluster
has one, else worker 0. Every worker takes part in every fit, evaluate and predict: their
collective ops wait for each other.

TF_CONFIG is read here without TensorFlow, so that a bad one is refused before it is imported.
"""

from __future__ import annotations

import dataclasses
import json
import os

from app.config import Config, ConfigError

# The task types of TF_CONFIG that train (an "evaluator" or "ps" task would not).
_TRAINING_TASKS = ("chief", "worker")


def cluster() -> tuple[int, str | None]:
    """(training tasks that TF_CONFIG names, this task as "type:index"); (1, None) without it."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return 1, None
    try:
        spec = json.loads(raw)
        tasks = sum(len(spec["cluster"].get(kind, [])) for kind in _TRAINING_TASKS)
        task = f"{spec['task']['type']}:{int(spec['task']['index'])}"
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"TF_CONFIG is not a tf.distribute cluster spec ({type(e).__name__}: {e}); it "
                          'needs {"cluster": {"chief": [...], "worker": [...]}, '
                          '"task": {"type": ..., "index": ...}}') from None
    return tasks, task


def check(config: Config) -> int:
    """Refuse, before TensorFlow is imported, what cannot work on this cluster; the training tasks it has."""
    tasks, task = cluster()
    if config.strategy == "multi-worker" and tasks < 2:
        raise ConfigError("--strategy multi-worker needs TF_CONFIG naming two or more chief/worker tasks; "
                          "use --strategy auto or mirrored on one machine")
    if tasks > 1 and config.strategy in ("auto", "multi-worker") and config.run_name is None:
        raise ConfigError(f"--run-name NAME is needed: TF_CONFIG names {tasks} tasks (this one {task}), and "
                          "every worker must name the same run")
    return tasks


@dataclasses.dataclass(frozen=True)
class Scale:
    strategy: object  # a tf.distribute.Strategy
    name: str  # one-device, mirrored or multi-worker
    replicas: int
    writes: bool  # this process writes the run (the chief)
    task: str | None

    def wait_for_peers(self) -> None:
        """Return once every worker of the job has started (a no-op on one machine)."""
        if self.name != "multi-worker":
            return
        import tensorflow as tf

        strategy = self.strategy

        @tf.function
        def all_present():  # a collective op completes only when every worker takes part
            return strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

        all_present()

    def epochs_everywhere(self, epochs_done: int) -> list[tuple[str, int]]:
        """(task, epochs of the checkpoint it resumes from) for every worker, in task order: each
        picks the newest checkpoint from its own listing of the shared folder, which a network
        filesystem's cache can make differ. A collective op, so every worker must call it."""
        if self.name != "multi-worker":
            return [(self.task or "this process", epochs_done)]
        import tensorflow as tf

        strategy = self.strategy

        @tf.function
        def gather():
            return strategy.gather(strategy.run(lambda: tf.constant([epochs_done], tf.int64)), axis=0)

        spec = json.loads(os.environ["TF_CONFIG"])["cluster"]
        tasks = [f"{kind}:{i}" for kind in _TRAINING_TASKS for i in range(len(spec.get(kind, [])))]
        return list(zip(tasks, (int(e) for e in gather().numpy()), strict=True))

    def description(self) -> str:
        where = f", this is {self.task}" + ("" if self.writes else " (the chief writes the run)") \
            if self.task else ""
        return f"strategy {self.name}, {self.replicas} replica{'s' * (self.replicas != 1)}{where}"


def scale(name: str) -> Scale:
    """The strategy for --strategy `name`; create it before TensorFlow runs any op."""
    import tensorflow as tf

    tasks, task = cluster()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "multi-worker" if tasks > 1 else "mirrored" if len(gpus) > 1 else "one-device"
    if name == "multi-worker":
        from app.scale import keras_multiworker

        keras_multiworker.apply()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored":
        # Every GPU of this machine; without GPUs, every logical CPU device (one unless configured).
        devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        strategy = tf.distribute.get_strategy()
    return Scale(strategy, name, strategy.num_replicas_in_sync, bool(strategy.extended.should_checkpoint),
                 task if name == "multi-worker" else None)
