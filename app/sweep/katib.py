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
- pruning: Katib's `medianstop`; none without pruning. Katib has no successive halving: that pruner becomes
  medianstop at its first rung (_early_stopping).
- each trial (`--katib-trial`, TRIAL_KINDS): by default a TFJob, a Chief and a Worker with the pod
  template of deploy/kubernetes/base/tfjob.yaml (tests/unit/test_katib.py checks they are the same), so
  `--strategy auto` and the claim `mnist-logs` work as for the single TFJob, and every trial is one more
  run for the TensorBoard that reads that claim. Or (`trainjob`) a Kubeflow Trainer v2 TrainJob as
  deploy/kubernetes/trainjob's, on its TrainingRuntime mnist-tensorflow (the pods and their
  `python -m app.scale.jobset_cluster` command are the runtime's; the trial gives the flags), the chief
  (JobSet's pod 0) being the primary pod. Its run folder is the Katib trial's own name.
- metrics: Katib's StdOut collector, with app/metric_lines.py's filter on the lines the trainer
  prints once per epoch: early stopping needs metrics while the trial runs.
- network: the trials' pods carry `app.kubernetes.io/instance: <experiment>`, and the printed YAML holds,
  after the Experiment, the NetworkPolicies that isolate them (`network_policies`): TensorFlow's port
  2222 has no authentication, so a trial's pods are reached only by the pods of the same Experiment's
  trials (a NetworkPolicy cannot name a trial's TFJob before Katib names it), and reach only those, the
  DNS, HTTPS to public addresses (the MNIST download) and Katib's services for the metrics collector.

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
# What each trial is: `python -m app.sweep FILE --katib --katib-trial KIND`, the first the default.
TRIAL_KINDS = ("tfjob", "trainjob")
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
# The project's version (pyproject.toml), the tag deploy/kubernetes/components/image gives every pod; a
# test keeps them equal. Never `latest`. A digest or a registry: that component (kustomize), or an overlay.
IMAGE = "mnist-tensorboard/trainer:0.4.0"
CONTAINER = "tensorflow"  # the training operator gives TF_CONFIG to the container of this name only
# The label the training operator (release 1.9, TFJobReconciler.IsMasterRole) gives the Chief's pod
# and no other when the job has a Chief: the pod that writes the run and prints the metrics.
PRIMARY_POD_LABELS = {"training.kubeflow.org/job-role": "master"}
# Katib's defaults for Kubeflow training jobs (experiment_defaults.go), written out: gjson paths into
# the TFJob's status.
SUCCESS_CONDITION = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
# A TrainJob trial (Kubeflow Trainer v2.3, trainer.kubeflow.org/v1alpha1): deploy/kubernetes/trainjob's
# TrainJob on its namespaced TrainingRuntime, which holds the pods (the container `node` runs
# `python -m app.scale.jobset_cluster`; the trial gives its flags). Katib 0.19's defaults for a TrainJob
# (experiment_defaults.go), written out: the conditions Trainer sets (Complete, Failed), and the primary
# pod, JobSet's pod 0 of the replicated job `node`, the chief: JobSet labels every pod with its
# replicated job, the Job controller (Kubernetes >= 1.28) with its completion index.
TRAINER_API_VERSION, RUNTIME, NODE = "trainer.kubeflow.org/v1alpha1", "mnist-tensorflow", "node"
NUM_NODES = 2  # the chief and WORKERS workers, as deploy/kubernetes/trainjob/trainjob.yaml
TRAINJOB_PRIMARY_POD_LABELS = {"jobset.sigs.k8s.io/replicatedjob-name": NODE,
                               "batch.kubernetes.io/job-completion-index": "0"}
TRAINJOB_SUCCESS_CONDITION = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
# Who owns the trial's runtime patch (Trainer's webhook wants a domain-prefixed path): the patch only labels
# the pods with the Experiment (INSTANCE_LABEL), for the trials' NetworkPolicies.
RUNTIME_PATCH_MANAGER = "mnist-tensorboard/katib-trial"
# JobSet's webhook: a pod's name <trainjob>-node-0-<index>-<5 characters> within 63 characters, the
# TrainJob (so the JobSet) being named <experiment>-<8 characters> by Katib.
POD_NAME_MAX, KATIB_SUFFIX = 63, len("-12345678")
LABELS = {"app.kubernetes.io/name": "mnist-tensorboard", "app.kubernetes.io/component": "trainer"}
# On every trial's pods, with the Experiment's name: what the trials' NetworkPolicies select.
INSTANCE_LABEL = "app.kubernetes.io/instance"
# Where Katib's services listen (Katib 0.19's manifests, not checked on a cluster here): the DB manager,
# to which the metrics collector in the trial's chief reports, in Katib's namespace; the early-stopping
# service (medianstop), beside the suggestion service in the Experiment's namespace.
KATIB_NAMESPACE, KATIB_DB_MANAGER_PORT, KATIB_EARLY_STOPPING_PORT = "kubeflow", 6789, 6788
# The cluster's DNS, as deploy/kubernetes/base/networkpolicy.yaml names it (CoreDNS's usual label).
DNS_PODS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}


def experiment_name(sweep: Sweep, trial: str = "tfjob") -> str:
    """`<sweep>-trial`: Katib names each trial `<experiment>-<suffix>`, so every trial's name, its
    job's and its run folder's are one: `<sweep>-trial-<suffix>`, as `<sweep>-trial-NNN` on one host."""
    name = f"{sweep.name}-trial"
    longest = EXPERIMENT_NAME_MAX
    if trial == "trainjob":
        longest = min(longest, POD_NAME_MAX - KATIB_SUFFIX - len(f"-{NODE}-0-{NUM_NODES - 1}-abcde"))
    if not EXPERIMENT_NAME.fullmatch(name) or len(name) > longest:
        raise SweepError(f"{sweep.source}: --katib: sweep name {sweep.name!r} cannot name a Katib Experiment "
                         f"({name!r}): give the file a name: of lowercase letters, digits and '-', starting "
                         f"with a letter, at most {longest - len('-trial')} characters")
    return name


def experiment(sweep: Sweep, trial: str = "tfjob") -> dict:
    """The Experiment (a plain dict, ready for YAML) that runs `sweep` on Katib, each trial a `trial`
    (one of TRIAL_KINDS)."""
    if trial not in TRIAL_KINDS:
        raise SweepError(f"--katib-trial {trial}: one of {', '.join(TRIAL_KINDS)}")
    name = experiment_name(sweep, trial)
    _check_fixed(sweep)
    trainjob = trial == "trainjob"
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
            "primaryContainerName": NODE if trainjob else CONTAINER,
            "primaryPodLabels": dict(TRAINJOB_PRIMARY_POD_LABELS if trainjob else PRIMARY_POD_LABELS),
            "successCondition": TRAINJOB_SUCCESS_CONDITION if trainjob else SUCCESS_CONDITION,
            "failureCondition": FAILURE_CONDITION,
            # Keep each finished trial's job (and so its pods' logs); the Experiment owns them all.
            "retain": True,
            "trialParameters": [
                {"name": RUN_NAME_PARAMETER, "reference": "${trialSpec.Name}",
                 "description": "the trial's name, which is also its run folder under logs/fit"},
                *({"name": p.name, "reference": p.name, "description": f"the trial's {p.name}"}
                  for p in sweep.parameters),
            ],
            "trialSpec": (trial_trainjob if trainjob else trial_job)(trainer_args(sweep), name),
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
    pruning = sweep.pruning
    if pruning.pruner == "median":
        # Optuna may prune after epoch warmup_epochs + 1 and needs startup_trials finished; Katib wants
        # start_step >= 1 and min_trials_required > 0 (a median of no trial is none in either).
        settings = {"min_trials_required": max(1, pruning.startup_trials),
                    "start_step": pruning.warmup_epochs + 1}
    else:
        # Successive halving: Katib 0.19 has none (its hyperband is a sampler). The nearest it has: medianstop
        # at the first rung (epoch min_epochs), once reduction_factor trials finished, as a rung of
        # reduction_factor trials is the least that keeps one and stops the others.
        settings = {"min_trials_required": pruning.reduction_factor, "start_step": pruning.min_epochs}
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


def trial_pod_template(args: list[str], experiment: str = "") -> dict:
    """The pod template of deploy/kubernetes/base/tfjob.yaml, running `python -m app` with `args`, its
    pods labelled as the trials of `experiment` (INSTANCE_LABEL).

    `command` is written out although the image's entry point is the same: without it, Katib's pod
    webhook asks the image's registry for the entry point (to wrap the command for the collector),
    which fails for an image the webhook cannot pull, such as one loaded into kind.
    """
    template = copy.deepcopy(POD_TEMPLATE)
    if experiment:
        template["metadata"]["labels"][INSTANCE_LABEL] = experiment
    [container] = template["spec"]["containers"]
    head = {k: container.pop(k) for k in ("name", "image", "imagePullPolicy")}
    template["spec"]["containers"] = [{**head, "command": ["python3", "-m", "app"], "args": list(args),
                                       **container}]
    return template


def trial_job(args: list[str], experiment: str = "") -> dict:
    """A TFJob like deploy/kubernetes/base/tfjob.yaml's (Chief and one Worker) without a name: Katib
    names it after the trial."""
    replica = {"replicas": 1, "restartPolicy": "OnFailure", "template": trial_pod_template(args, experiment)}
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"labels": dict(LABELS)},
            "spec": {"runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 10},
                     "tfReplicaSpecs": {"Chief": copy.deepcopy(replica), "Worker": copy.deepcopy(replica)}}}


def trial_trainjob(args: list[str], experiment: str = "") -> dict:
    """deploy/kubernetes/trainjob/trainjob.yaml's TrainJob without a name (Katib names it after the trial),
    its `python -m app.scale.jobset_cluster` given `args`, its pods labelled as the trials of `experiment`
    (INSTANCE_LABEL) by a runtime patch: the pods themselves are the TrainingRuntime's."""
    runtime = {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": RUNTIME}
    workers = [{"name": "WORKERS", "value": str(NUM_NODES - 1)}]  # beside numNodes, as jobset_cluster wants
    trainer = {"numNodes": NUM_NODES, "args": list(args), "env": workers}
    job = {"apiVersion": TRAINER_API_VERSION, "kind": "TrainJob", "metadata": {"labels": dict(LABELS)},
           "spec": {"runtimeRef": runtime, "trainer": trainer}}
    if experiment:
        pods = {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {
            "metadata": {"labels": {INSTANCE_LABEL: experiment}}}}}}]}
        job["spec"]["runtimePatches"] = [{"manager": RUNTIME_PATCH_MANAGER,
                                          "trainingRuntimeSpec": {"template": {"spec": pods}}}]
    return job


# deploy/kubernetes/base/tfjob.yaml's pod template, whose comments say why each line is there; the
# image is not in the Docker image (deploy/ is not copied), so it is repeated here and
# tests/unit/test_katib.py checks the two are the same but for the command.
POD_TEMPLATE = {
    "metadata": {"labels": dict(LABELS)},
    "spec": {
        # The trainer never talks to the Kubernetes API: no service-account token in the pod.
        "automountServiceAccountToken": False,
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


def network_policies(exp: dict) -> list[dict]:
    """The NetworkPolicies of the Experiment's trials, as deploy/kubernetes/base/networkpolicy.yaml's
    for the single TFJob (whose comments say why each rule is there), but selecting every trial of this
    Experiment by INSTANCE_LABEL: the training operator's job-name label (JobSet's jobset-name for a
    TrainJob trial) has a value per trial that Katib chooses when it makes the trial, so no policy written
    before can name it. The same for both trial kinds: the TrainJob folder's rules are the TFJob's."""
    name = exp["metadata"]["name"]
    trials = {"matchLabels": {"app.kubernetes.io/name": LABELS["app.kubernetes.io/name"],
                              INSTANCE_LABEL: name}}
    labels = {**LABELS, "app.kubernetes.io/component": "sweep"}

    def policy(suffix: str, types: list[str], **rules) -> dict:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": f"{name}-{suffix}", "labels": dict(labels)},
                "spec": {"podSelector": copy.deepcopy(trials), "policyTypes": types, **rules}}

    def tcp(port: int) -> dict:
        return {"protocol": "TCP", "port": port}

    dns = {"to": [copy.deepcopy(DNS_PODS)], "ports": [{"protocol": "UDP", "port": 53}, tcp(53)]}
    public = [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                           "100.64.0.0/10", "169.254.0.0/16"]}},
              {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}}]
    katib_namespace = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": KATIB_NAMESPACE}}}
    katib = [{"to": [katib_namespace], "ports": [tcp(KATIB_DB_MANAGER_PORT)]},
             {"to": [{"podSelector": {}}], "ports": [tcp(KATIB_EARLY_STOPPING_PORT)]}]
    return [policy("deny-all", ["Ingress", "Egress"]),
            policy("peers", ["Ingress", "Egress"],
                   ingress=[{"from": [{"podSelector": copy.deepcopy(trials)}]}],
                   egress=[{"to": [{"podSelector": copy.deepcopy(trials)}]}, dns]),
            policy("download", ["Egress"], egress=[{"to": public, "ports": [tcp(443)]}]),
            policy("katib", ["Egress"], egress=katib)]


def to_yaml(obj: dict, command: str) -> str:
    """The Experiment `obj`, then its trials' NetworkPolicies: one file for `kubectl apply -f`."""
    kind = obj["spec"]["trialTemplate"]["trialSpec"]["kind"]
    header = (f"# A Katib v1beta1 Experiment (Katib 0.19) of {kind} trials, and their NetworkPolicies:\n"
              f"# {command}\n"
              "# Generated: change the sweep file and run that again. docs/kubernetes.md#sweeps-with-katib\n")
    return header + "---\n".join(yaml.safe_dump(each, sort_keys=False, width=110)
                                  for each in (obj, *network_policies(obj)))
