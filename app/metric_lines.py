"""One line per epoch with the epoch's metrics as name=value, for collectors that read a run's output.

    2026-12-02T14:31:28.123456Z epoch 1/3: accuracy=0.8533 loss=0.4821 val_accuracy=0.9412 val_loss=0.1987

Katib's StdOut metrics collector (docs/kubernetes.md#sweeps-with-katib) reads a trial's output
with FILTER, a regular expression whose first group is a metric's name and the second its value;
Keras' own epoch line ("val_accuracy: 0.9412") has no "=", so only this line counts. The line
starts with an RFC 3339 time because Katib's collector takes a line's first word as the metric's
timestamp when it parses as one (else it records the zero time), and orders a trial's metrics by
it. Imports neither TensorFlow nor Keras: `python -m app.sweep --katib` writes FILTER into the
Experiment it prints.
"""

from __future__ import annotations

import datetime
import math

# The metrics a sweep can optimise (app/sweep/spec.py OBJECTIVES), in Keras' history names.
METRICS = ("accuracy", "loss", "val_accuracy", "val_loss")

# Name, then a number with at least one digit. Katib's default filter would also take "loss=" with no
# number, which its early-stopping watcher (file-metricscollector, Katib 0.19) treats as a fatal
# error. Written in the syntax that Go's RE2 (the collector's) and Python's re read alike.
FILTER = r"([\w-]+)=([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"


def line(epoch: int, epochs: int, logs: dict, now: datetime.datetime | None = None) -> str:
    """The line for epoch `epoch` (1-based) of `epochs`, from Keras' epoch-end `logs`.

    A metric that is missing or not finite is left out: a NaN loss ends the run anyway, and a
    collector must never be handed a value that is no number.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    values = [f"{name}={float(logs[name]):.6g}" for name in METRICS
              if name in logs and math.isfinite(float(logs[name]))]
    return f"{stamp} epoch {epoch}/{epochs}: {' '.join(values)}"
