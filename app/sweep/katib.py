"""The sweep as a Katib v1beta1 Experiment: the same sweep file run by Katib 0.19 on Kubernetes.

`python -m app.sweep FILE --katib` prints what `experiment(sweep)` builds. What maps to what, and
why (docs/kubernetes.md#sweeps-with-katib has the whole story):

- parameters: a float range is `double`, a whole-number range `int`, `log: true` Katib's
  `distribution: logUniform` (which its tpe and random, served by hyperopt, draw as log-uniform);
  choices of numbers are `discrete`, of text `categorical`.
- sampler tpe, random, grid: Katib's algorithms of the same names; trials: `maxTrialCount`; failed
  trials count as finished, as on one host: `maxFailedTrialCount` is the trial count, so only a
  sweep whose every trial failed fails.
- objective: `objectiveMetricName`, the other metrics as `additionalMetricNames`, every one taken
  from the trial's last epoch (`metricStrategies: latest`), as the one-host sweep takes its value.
- pruning: Katib's `medianstop`; none without pruning.
- each trial: a TFJob, a Chief and a Worker with the pod template of deploy/kubernetes/base/
  tfjob.yaml (tests/unit/test_katib.py checks they are the same), so `--strategy auto` and the claim
  `mnist-logs` work as for the single TFJob, and every trial is one more run for the TensorBoard
  that reads that claim. Its run folder is the Katib trial's own name.
- metrics: Katib's StdOut collector, with app/metric_lines.py's filter on the lines the trainer
  prints once per epoch: early stopping needs metrics while the trial runs.

Imports neither Optuna nor TensorFlow: like the sweep file's checks, this answers at once.
"""

from __future__ import annotations

import copy
import re
import shlex

import yaml

from app import metric_lines
from app.config import as_flags
from app.sweep.spec import OBJECTIVES, Parameter, Sweep, SweepError

API_VERSION = "kubeflow.org/v1beta1"
# Trials at once. The one-host sweep's default (`make sweep`) is 2 sweepers; each trial here is two
# pods (Chief and Worker). `kubectl patch` may change it on a running Experiment (Katib allows it).
PARALLEL_TRIALS = 2
# Where the trainer's --log-dir (default logs, under the image's WORKDIR /app) meets the claim.
LOG_DIR, LOG_MOUNT = "logs", "/app/logs"
# Katib's webhook: at most 40 characters, starting with a letter; trials and their TFJobs are named
# <experiment>-<8 characters>, and a TFJob's name must be a DNS-1035 label.
EXPERIMENT_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
EXPERIMENT_NAME_MAX = 40
RUN_NAME_PARAMETER = "run_name"
IMAGE = "mnist-tensorboard/trainer:latest"  # what deploy/kubernetes renders; retag with kustomize
CONTAINER = "tensorflow"  # the training operator gives TF_CONFIG to the container of this name only
# The label the training operator (release 1.9, TFJobReconciler.IsMasterRole) gives the Chief's pod
# and no other when the job has a Chief: the pod that writes the run and prints the metrics.
PRIMARY_POD_LABELS = {"training.kubeflow.org/job-role": "master"}
# Katib's defaults for Kubeflow training jobs (experiment_defaults.go), written out: gjson paths into
# the TFJob's status.
SUCCESS_CONDITION = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
LABELS = {"app.kubernetes.io/name": "mnist-tensorboard", "app.kubernetes.io/component": "trainer"}


def experiment_name(sweep: Sweep) -> str:
    """`<sweep>-trial`: Katib names each trial `<experiment>-<suffix>`, so every trial's name, its
    TFJob's and its run folder's are one: `<sweep>-trial-<suffix>`, as `<sweep>-trial-NNN` on one host."""
    name = f"{sweep.name}-trial"
    if not EXPERIMENT_NAME.fullmatch(name) or len(name) > EXPERIMENT_NAME_MAX:
        raise SweepError(f"{sweep.source}: --katib: sweep name {sweep.name!r} cannot name a Katib Experiment "
                         f"({name!r}): give the file a name: of lowercase letters, digits and '-', starting "
                         f"with a letter, at most {EXPERIMENT_NAME_MAX - len('-trial')} characters")
    return name


def experiment(sweep: Sweep) -> dict:
    """The Experiment (a plain dict, ready for YAML) that runs `sweep` on Katib."""
    name = experiment_name(sweep)
    _check_fixed(sweep)
    others = [m for m in OBJECTIVES if m != sweep.metric]
    spec = {
        "objective": {
            "type": sweep.direction,
            "objectiveMetricName": sweep.metric,
            "additionalMetricNames": others,
            "metricStrategies": [{"name": m, "value": "latest"} for m in (sweep.metric, *others)],
        },
        "algorithm": {"algorithmName": sweep.sampler},  # Katib has algorithms of the same names
        **({"earlyStopping": _early_stopping(sweep)} if sweep.pruning else {}),
        "maxTrialCount": sweep.trials,
        "parallelTrialCount": min(PARALLEL_TRIALS, sweep.trials),
        "maxFailedTrialCount": sweep.trials,
        "parameters": [_parameter(p) for p in sweep.parameters],
        "metricsCollectorSpec": {
            "collector": {"kind": "StdOut"},
            "source": {"filter": {"metricsFormat": [metric_lines.FILTER]}},
        },
        "trialTemplate": {
            "primaryContainerName": CONTAINER,
            "primaryPodLabels": dict(PRIMARY_POD_LABELS),
            "successCondition": SUCCESS_CONDITION,
            "failureCondition": FAILURE_CONDITION,
            # Keep each finished trial's TFJob (and so its pods' logs); the Experiment owns them all.
            "retain": True,
            "trialParameters": [
                {"name": RUN_NAME_PARAMETER, "reference": "${trialSpec.Name}",
                 "description": "the trial's name, which is also its run folder under logs/fit"},
                *({"name": p.name, "reference": p.name, "description": f"the trial's {p.name}"}
                  for p in sweep.parameters),
            ],
            "trialSpec": trial_job(trainer_args(sweep)),
        },
    }
    return {"apiVersion": API_VERSION, "kind": "Experiment",
            "metadata": {"name": name, "labels": {**LABELS, "app.kubernetes.io/component": "sweep"}},
            "spec": spec}


def _early_stopping(sweep: Sweep) -> dict:
    """Optuna's median pruner as Katib's medianstop (its service in Katib 0.19 behaves differently:
    it checks a trial once, after epoch start_step, against the mean over the finished trials of
    their first start_step values; docs/kubernetes.md)."""
    assert sweep.pruning is not None
    # Optuna may prune after epoch warmup_epochs + 1 and needs startup_trials finished; Katib wants
    # start_step >= 1 and min_trials_required > 0 (a median of no trial is none in either).
    settings = {"min_trials_required": max(1, sweep.pruning.startup_trials),
                "start_step": sweep.pruning.warmup_epochs + 1}
    return {"algorithmName": "medianstop",
            "algorithmSettings": [{"name": k, "value": str(v)} for k, v in settings.items()]}


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _parameter(p: Parameter) -> dict:
    if p.kind == "choice":
        numbers = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p.choices)
        return {"name": p.name, "parameterType": "discrete" if numbers else "categorical",
                "feasibleSpace": {"list": [_text(c) for c in p.choices]}}
    return {"name": p.name, "parameterType": "double" if p.kind == "float" else "int",
            "feasibleSpace": {"min": _text(p.low), "max": _text(p.high),
                              "distribution": "logUniform" if p.log else "uniform"}}


def trainer_args(sweep: Sweep) -> list[str]:
    """The trial's `python -m app` flags: the single TFJob's, the sweep's fixed settings, then one flag
    per parameter with Katib's placeholder for its value."""
    fixed = as_flags({"strategy": "auto", **sweep.fixed})
    swept = [word for p in sweep.parameters
             for word in (f"--{p.name.replace('_', '-')}", f"${{trialParameters.{p.name}}}")]
    return [*fixed[:2], "--run-name", f"${{trialParameters.{RUN_NAME_PARAMETER}}}", "--resume", "auto",
            *fixed[2:], *swept]


def _check_fixed(sweep: Sweep) -> None:
    log_dir = sweep.fixed.get("log_dir", LOG_DIR)
    if log_dir != LOG_DIR:
        raise SweepError(f"{sweep.source}: --katib: --log-dir {log_dir}: trials write to the logs claim, "
                         f"mounted at {LOG_MOUNT} (--log-dir {LOG_DIR}); drop --log-dir")
    # Katib's StdOut collector runs the command as `sh -c "<command and args joined by spaces> 1>...`
    # (its pod webhook, Katib 0.19), so a word the shell would split or expand breaks the trial.
    for word in as_flags(sweep.fixed):
        if shlex.quote(word) != word:
            raise SweepError(f"{sweep.source}: --katib: {word!r}: Katib joins the trial's command with "
                             "spaces for a shell, which would split or expand it; use a value without "
                             "spaces or shell characters")


def trial_pod_template(args: list[str]) -> dict:
    """The pod template of deploy/kubernetes/base/tfjob.yaml, running `python -m app` with `args`.

    `command` is written out although the image's entry point is the same: without it, Katib's pod
    webhook asks the image's registry for the entry point (to wrap the command for the collector),
    which fails for an image the webhook cannot pull, such as one loaded into kind.
    """
    template = copy.deepcopy(POD_TEMPLATE)
    [container] = template["spec"]["containers"]
    head = {k: container.pop(k) for k in ("name", "image", "imagePullPolicy")}
    template["spec"]["containers"] = [{**head, "command": ["python3", "-m", "app"], "args": list(args),
                                       **container}]
    return template


def trial_job(args: list[str]) -> dict:
    """A TFJob like deploy/kubernetes/base/tfjob.yaml's (Chief and one Worker) without a name: Katib
    names it after the trial."""
    replica = {"replicas": 1, "restartPolicy": "OnFailure", "template": trial_pod_template(args)}
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"labels": dict(LABELS)},
            "spec": {"runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 10},
                     "tfReplicaSpecs": {"Chief": copy.deepcopy(replica), "Worker": copy.deepcopy(replica)}}}


# deploy/kubernetes/base/tfjob.yaml's pod template, whose comments say why each line is there; the
# image is not in the Docker image (deploy/ is not copied), so it is repeated here and
# tests/unit/test_katib.py checks the two are the same but for the command.
POD_TEMPLATE = {
    "metadata": {"labels": dict(LABELS)},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                            "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER,
            "image": IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "tfjob-port", "containerPort": 2222}],
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "logs", "mountPath": LOG_MOUNT}, {"name": "tmp", "mountPath": "/tmp"},
                             {"name": "keras-cache", "mountPath": "/cache/keras"}],
        }],
        "volumes": [{"name": "logs", "persistentVolumeClaim": {"claimName": "mnist-logs"}},
                    {"name": "tmp", "emptyDir": {}}, {"name": "keras-cache", "emptyDir": {}}],
    },
}


def to_yaml(obj: dict, command: str) -> str:
    header = (f"# A Katib v1beta1 Experiment (Katib 0.19): {command}\n"
              "# Generated: change the sweep file and run that again. docs/kubernetes.md#sweeps-with-katib\n")
    return header + yaml.safe_dump(obj, sort_keys=False, width=110)
