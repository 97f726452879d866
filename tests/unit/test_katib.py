"""The Katib Experiment of `python -m app.sweep FILE --katib [--katib-trial trainjob]`, checked offline: no
cluster, no Katib.

What checks what (Katib 0.19.0, training operator release 1.9, Kubeflow Trainer v2.3.0;
docs/kubernetes.md#sweeps-with-katib):

- The Experiment against kubeflow-katib-api 0.19.0's pydantic models (generated from Katib's OpenAPI
  spec), strictly: `model_validate(strict=True, extra="forbid")` by the JSON names only (the models
  themselves ignore unknown fields, and their `from_dict` drops them silently).
- The rules of Katib's validating webhook (pkg/webhook/v1beta1/experiment/validator/validator.go),
  rewritten: name, counts, objective, algorithm and early stopping known, parameters and their feasible
  spaces, the trial template (success and failure conditions, every trialParameters entry used in the
  trial spec and every placeholder defined, references to parameters or trial metadata, no name in the
  trial spec), the metrics collector and its filter.
- What Katib does after admission, from its sources: the suggestion services' and medianstop's settings,
  Katib's grid (no more trials than points), feasible spaces that the services can draw from (numbers,
  min < max, log-uniform above 0), the StdOut collector's `sh -c` wrapping (pod webhook utils.go), the
  primary pod labels against the labels the training operator (or JobSet and the Job controller) gives
  each pod, success and failure conditions that name the trial kind's condition types.
- The trial, as Katib's manifest generator makes it (placeholders replaced, name set): a TFJob that
  passes every TFJob check of test_kubernetes.py, with deploy/kubernetes/base/tfjob.yaml's pod
  template; or a TrainJob as deploy/kubernetes/trainjob's, against Trainer v2.3.0's vendored CRD schema
  and rules (test_kubernetes_jobs.problems: its JobSet through JobSet's webhook too), kubeflow-trainer-api
  2.3.0's pydantic models (strict, as above) and Trainer's rules for runtime patches (jobset.go), its
  pods those of the TrainingRuntime with the patch applied; its command parsed by the trainer's own
  parser; and (tests/integration/test_katib_trials.py) run for real for one epoch, its output parsed as
  Katib's collector parses it, which must give the objective and every additional metric.
- deploy/kubernetes/sweep and deploy/kubernetes/sweep/trainjob rendered with kubectl's kustomize:
  TensorBoard (and the TrainingRuntime) and an Experiment equal to the command's output, no claim
  (deploy/kubernetes/storage holds it).
- The NetworkPolicies printed after the Experiment: valid, a default deny for every trial pod, the trials
  of one Experiment reaching each other and no other trainer, Katib's services reachable.
- The trial's chief as Katib's pod webhook changes it for the StdOut collector (the sidecar
  metrics-logger-and-collector, a shared process namespace, an emptyDir), against the restricted Pod
  Security Standard: refused without Katib's `injectSecurityContext`, admitted with it.

Every check is shown to reject a broken copy. What this cannot show: that Katib and the operator run it.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import math
import re
import shlex
import subprocess
import sys

import pytest
from helpers import ROOT, cli_env, run_main
from kubeflow_katib_api.models import V1beta1Experiment
from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
from pydantic import BaseModel, ValidationError
from test_kubernetes import (
    DEPLOY,
    KATIB_DB,
    RETAGGED,
    STRANGER,
    SUGGESTION,
    allowed,
    by_where,
    container,
    core_problems,
    denies_all,
    hardening_problems,
    jobset_pods,
    kustomize,
    label_selects,
    load_documents,
    mounts,
    network_policy_problems,
    only,
    pod_template_problems,
    pods,
    restricted_problems,
    retagged,
    tfjob_problems,
    trainjob_jobset,
)
from test_kubernetes_jobs import problems as trainer_crd_problems

from app import metric_lines
from app.__main__ import parser as trainer_parser
from app.config import Config
from app.sweep import katib as katib_sweep
from app.sweep.__main__ import main as sweep_main
from app.sweep.spec import SweepError
from app.sweep.spec import load as load_sweep

SWEEP_OVERLAY = DEPLOY / "sweep"
TRAINJOB_OVERLAY = SWEEP_OVERLAY / "trainjob"  # the Experiment of TrainJob trials, with their runtime
DEFAULT = ROOT / "sweeps" / "default.yaml"
# Katib names a trial <experiment>-<8 characters of k8s.io/apimachinery's utilrand alphabet>.
SUFFIX = "bq7x2k9m"

# Every kind of parameter and setting the generator maps.
EVERY_KIND = """\
name: every-kind
trials: 6
objective: {metric: val_loss}
sampler: random
pruning: {startup_trials: 0, warmup_epochs: 2}
parameters:
  learning_rate: {low: 0.001, high: 0.01}
  batch_size: {low: 32, high: 512, log: true}
  epochs: {low: 1, high: 3}
  seed: {choices: [1, 2, 3]}
  lr_schedule: {choices: [cosine, constant]}
fixed:
  deterministic: true
  data: /data/mnist.npz
  precision: float32
"""
GRID = """\
name: grid
trials: 4
sampler: grid
parameters:
  batch_size: {choices: [64, 128]}
  lr_schedule: {choices: [cosine, constant]}
"""

# Katib 0.19's katib-config.yaml (manifests/v1beta1/installs/katib-standalone): what it can run.
ALGORITHMS = {"random", "tpe", "grid", "hyperband", "bayesianoptimization", "cmaes", "sobol",
              "multivariate-tpe", "enas", "darts", "pbt"}
EARLY_STOPPINGS = {"medianstop"}
COLLECTORS = {"StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None", "Push"}
PARAMETER_TYPES = {"int", "double", "categorical", "discrete", "unknown"}
DISTRIBUTIONS = {"uniform", "logUniform", "normal", "logNormal", "distributionUnknown"}
RESUME_POLICIES = {"", "Never", "LongRunning", "FromVolume"}
META_KEYS = {"Name", "Namespace", "Kind", "APIVersion", "Annotations", "Labels"}
# The suggestion services' own settings (hyperopt: tpe, random; optuna: grid) and medianstop's.
ALGORITHM_SETTINGS = {"tpe": {"gamma", "prior_weight", "n_EI_candidates", "random_state"},
                      "random": {"random_state"}, "grid": {"random_state"}}
# The TFJob's condition types (kubeflow.org/v1 JobConditionType), and the TrainJob's (Trainer v2.3.0,
# trainjob_types.go), with the success and failure each trial kind's job reports.
TFJOB_CONDITIONS = {"Created", "Running", "Restarting", "Succeeded", "Failed", "Suspended"}
TRAINJOB_CONDITIONS = {"Suspended", "Complete", "Failed"}
OUTCOMES = {"TFJob": ("Succeeded", "Failed"), "TrainJob": ("Complete", "Failed")}
# The pods of a trial by kind: the primary (the chief, which writes the run and prints the metrics) and a
# worker, as trial_pods names them.
CHIEF = {"TFJob": "Chief[0]", "TrainJob": "node-0-0"}
WORKER = {"TFJob": "Worker[0]", "TrainJob": "node-0-1"}
CONDITION = re.compile(r'status\.conditions\.#\(type=="(\w+)"\)#\|#\(status=="True"\)#')
# Katib's consts.TrialTemplateParamReplaceFormatRegex and TrialTemplateMetaReplaceFormatRegex.
PARAMETER_PLACEHOLDER = re.compile(r"\$\{trialParameters\..+?\}")
META_REFERENCE = re.compile(r"\$\{trialSpec\.(.+?)\}")


def generated(text: str | None = None, *flags: str, tmp_path=None, trial: str = "tfjob") -> dict:
    """The Experiment of sweep file DEFAULT (or of `text`), as the command builds it, of `trial` trials."""
    path = DEFAULT
    if text is not None:
        path = tmp_path / "sweep.yaml"
        path.write_text(text)
    given = vars(trainer_parser().parse_args(list(flags)))
    return katib_sweep.experiment(load_sweep(str(path), given), trial)


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("sweeps")
    return {"default": generated(),
            "every kind": generated(EVERY_KIND, tmp_path=folder),
            "grid": generated(GRID, tmp_path=folder),
            "trainjob": generated(trial="trainjob"),
            "every kind, trainjob": generated(EVERY_KIND, tmp_path=folder, trial="trainjob")}


EVERY = ["default", "every kind", "grid", "trainjob", "every kind, trainjob"]


# ---------------------------------------------------------------------------------------------------
# What Katib does with an Experiment, rewritten


def sample_values(exp: dict) -> dict[str, str]:
    """One value per parameter, as a suggestion service would send it (text): each range's low end,
    each list's last entry."""
    values = {}
    for p in exp["spec"]["parameters"]:
        space = p["feasibleSpace"]
        values[p["name"]] = space["list"][-1] if space.get("list") else str(space.get("min"))
    return values


def trial_name(exp: dict) -> str:
    return f"{exp['metadata']['name']}-{SUFFIX}"


def run_spec(exp: dict, values: dict[str, str], namespace: str = "default") -> dict:
    """The trial's TFJob as Katib's manifest generator makes it (GetRunSpecWithHyperParameters): the
    trial spec as JSON text, each ${trialParameters.X} replaced, then named after the trial."""
    template = exp["spec"]["trialTemplate"]
    spec = template["trialSpec"]
    text = json.dumps(spec)
    name = trial_name(exp)
    for parameter in template["trialParameters"]:
        reference = parameter["reference"]
        meta = META_REFERENCE.fullmatch(reference)
        if meta is None:
            value = values[reference]
        else:
            key = meta.group(1)
            value = {"Name": name, "Namespace": namespace, "Kind": spec["kind"],
                     "APIVersion": spec["apiVersion"]}[key]
        text = text.replace(f"${{trialParameters.{parameter['name']}}}", value)
    job = json.loads(text)
    job.setdefault("metadata", {}).update(name=name, namespace=namespace)
    return job


def pydantic_problems(obj: dict, model: type[BaseModel], where: str) -> list[str]:
    """`obj` against a pydantic model of kubeflow-katib-api or kubeflow-trainer-api, strictly. The models
    leave `extra` at pydantic's default (ignore) and accept Python names beside the JSON ones
    (populate_by_name), so both are refused here (pydantic >= 2.14's per-call `extra`); `strict`: no
    conversion, a number is no string. A pod template inside is no use here: the models make a resource
    quantity an object (the TrainJob trial has none; the TFJob's pods go to pod_template_problems)."""
    try:
        model.model_validate(obj, strict=True, extra="forbid", by_alias=True, by_name=False)
    except ValidationError as error:
        found = []
        for each in error.errors():
            at = where + "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in each["loc"])
            if each["type"] == "extra_forbidden":
                found.append(f"{at}: unknown field ({model.__name__})")
            else:
                found.append(f"{at}: {each['msg']} ({model.__name__}), found {type(each['input']).__name__} "
                             f"{each['input']!r}")
        return found
    return []


def model_problems(exp: dict) -> list[str]:
    """Field names and types against kubeflow-katib-api's models (the trial spec is free-form there: the
    trial's own checks below take it)."""
    return pydantic_problems(exp, V1beta1Experiment, "Experiment")


def webhook_problems(exp: dict) -> list[str]:
    """Katib's validating webhook (v0.19.0 validator.go), rule by rule, in its order."""
    problems = []
    name = (exp.get("metadata") or {}).get("name") or ""
    # The webhook's own regex is not anchored at the end; Kubernetes and the TFJob webhook need the
    # whole name to be a DNS label, so it is matched in full here.
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 40:
        problems.append(f"metadata.name {name!r}: lower case alphanumeric characters or '-', at most 40")
    spec = exp.get("spec") or {}
    counts = {key: spec.get(key) for key in ("maxTrialCount", "parallelTrialCount", "maxFailedTrialCount")}
    if counts["maxFailedTrialCount"] is not None and counts["maxFailedTrialCount"] < 0:
        problems.append("spec.maxFailedTrialCount: should not be less than 0")
    for key in ("maxTrialCount", "parallelTrialCount"):
        if counts[key] is not None and counts[key] <= 0:
            problems.append(f"spec.{key}: must be greater than 0")
    for key in ("maxFailedTrialCount", "parallelTrialCount"):
        if None not in (counts[key], counts["maxTrialCount"]) and counts[key] > counts["maxTrialCount"]:
            problems.append(f"spec.{key}: should be less than or equal to spec.maxTrialCount")

    objective = spec.get("objective")
    if not objective:
        return [*problems, "spec.objective: must be specified"]
    if objective.get("type") not in ("minimize", "maximize"):
        problems.append(f"spec.objective.type {objective.get('type')!r}: must be minimize or maximize")
    if not objective.get("objectiveMetricName"):
        problems.append("spec.objective.objectiveMetricName: must be specified")
    if objective.get("objectiveMetricName") in (objective.get("additionalMetricNames") or []):
        problems.append("spec.objective.additionalMetricNames: should not contain the objective metric")

    algorithm = (spec.get("algorithm") or {}).get("algorithmName")
    if algorithm not in ALGORITHMS:
        problems.append(f"spec.algorithm.algorithmName {algorithm!r}: no Suggestion config for it")
    early = spec.get("earlyStopping")
    if early is not None and early.get("algorithmName") not in EARLY_STOPPINGS:
        problems.append(f"spec.earlyStopping.algorithmName {early.get('algorithmName')!r}: no EarlyStopping "
                        "config for it")
    if spec.get("resumePolicy", "") not in RESUME_POLICIES:
        problems.append(f"spec.resumePolicy {spec.get('resumePolicy')!r}: invalid ResumePolicyType")

    problems += trial_template_problems(exp)

    parameters = spec.get("parameters") or []
    if not parameters and not spec.get("nasConfig"):
        problems.append("spec.parameters or spec.nasConfig must be specified")
    for i, p in enumerate(parameters):
        where = f"spec.parameters[{i}]"
        kind, space = p.get("parameterType"), p.get("feasibleSpace") or {}
        if kind not in PARAMETER_TYPES:
            problems.append(f"{where}.parameterType: {kind} is not supported")
        if space.get("distribution", "") not in DISTRIBUTIONS | {""}:
            problems.append(f"{where}.feasibleSpace.distribution: {space['distribution']} is not supported")
        if not space:
            problems.append(f"{where}.feasibleSpace: feasibleSpace must be specified")
        elif kind in ("double", "int"):
            if space.get("list"):
                problems.append(f"{where}.feasibleSpace.list: not supported for parameterType {kind}")
            if not space.get("max") or not space.get("min"):
                problems.append(f"{where}.feasibleSpace.max or min must be specified for parameterType "
                                f"{kind}")
        elif kind in ("categorical", "discrete") and any(space.get(k) for k in ("max", "min", "step")):
            problems.append(f"{where}.feasibleSpace: .max, .min and .step not supported for {kind}")

    collector = spec.get("metricsCollectorSpec") or {}
    kind = (collector.get("collector") or {}).get("kind", "StdOut")  # the defaulting webhook's default
    if kind not in COLLECTORS:
        problems.append(f"spec.metricsCollectorSpec.collector.kind: invalid metrics collector kind {kind}")
    for each in ((collector.get("source") or {}).get("filter") or {}).get("metricsFormat") or []:
        try:
            re.compile(each)  # Go's RE2 is the judge; FILTER keeps to the syntax the two share
        except re.error as error:
            problems.append(f"spec.metricsCollectorSpec.source.filter.metricsFormat {each!r}: invalid: "
                            f"{error}")
            continue
        if not re.fullmatch(r".*\(.*\).*\(.*\).*", each):
            problems.append(f"spec.metricsCollectorSpec.source.filter.metricsFormat {each!r}: two top "
                            "subexpressions are required")
    return problems


def trial_template_problems(exp: dict) -> list[str]:
    """validateTrialTemplate: the part of the webhook about spec.trialTemplate."""
    spec = exp.get("spec") or {}
    template = spec.get("trialTemplate")
    if not template:
        return ["spec.trialTemplate: must be specified"]
    problems = []
    if not template.get("primaryContainerName"):
        problems.append("spec.trialTemplate.primaryContainerName: must be specified")
    if not template.get("successCondition") or not template.get("failureCondition"):
        problems.append("spec.trialTemplate: successCondition and failureCondition must be specified")
    if template.get("trialParameters") is None:
        return [*problems, "spec.trialTemplate.trialParameters: must be specified"]
    if ("trialSpec" in template) == ("configMap" in template):
        return [*problems, "spec.trialTemplate: exactly one of trialSpec and configMap"]
    text = json.dumps(template["trialSpec"])
    names, references = set(), set()
    parameter_names = {p.get("name") for p in spec.get("parameters") or []}
    for i, parameter in enumerate(template["trialParameters"]):
        where = f"spec.trialTemplate.trialParameters[{i}]"
        name, reference = parameter.get("name") or "", parameter.get("reference") or ""
        if not name or not reference or "{" in name or "}" in name:
            problems.append(f"{where}: name and reference must be specified and name must not contain "
                            "'{' or '}'")
            continue
        if name in names or reference in references:
            problems.append(f"{where}: parameter name or reference {name!r}/{reference!r} duplicated")
            continue
        names.add(name)
        references.add(reference)
        meta = META_REFERENCE.fullmatch(reference)
        is_meta = meta is not None and (meta.group(1) in META_KEYS or re.fullmatch(
            r"(Labels|Annotations)\[.+\]", meta.group(1)) is not None)
        if parameter_names and not is_meta and reference not in parameter_names:
            problems.append(f"{where}.reference: parameter reference {reference} does not exist in "
                            "spec.parameters")
        placeholder = f"${{trialParameters.{name}}}"
        if placeholder not in text:
            return [*problems, f"{where}.name: parameter name {name} in spec.trialParameters not found in "
                                "spec.trialTemplate"]
        text = text.replace(placeholder, "test-value")
    left = PARAMETER_PLACEHOLDER.findall(text)
    if left:
        problems.append(f"spec.trialTemplate: parameters {left} in spec.trialTemplate not found in "
                        "spec.trialParameters")
    job = json.loads(text)
    if (job.get("metadata") or {}).get("name") or (job.get("metadata") or {}).get("namespace"):
        problems.append("spec.trialTemplate: metadata.name and metadata.namespace must be omitted")
    if not job.get("apiVersion") or not job.get("kind"):
        problems.append("spec.trialTemplate: APIVersion and Kind must be specified")
    return problems


def trial_kind(exp: dict) -> str:
    return ((exp["spec"].get("trialTemplate") or {}).get("trialSpec") or {}).get("kind", "")


@functools.cache
def runtime_objects() -> list[dict]:
    """What the TrainJob trials run on, as users apply it: deploy/kubernetes/sweep/trainjob rendered (its
    TrainingRuntime mnist-tensorflow is deploy/kubernetes/trainjob's)."""
    return kustomize(TRAINJOB_OVERLAY)


def merged(base, patch):
    """`patch` over `base` as a strategic merge patch on a JobSet spec, for what a runtime patch may hold
    (Trainer v2.3.0, TrainingRuntime.mergeRuntimePatches): maps merged key by key, lists of named items
    (replicatedJobs, containers: patchMergeKey name) merged item by item, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        found = copy.deepcopy(base)
        for key, value in patch.items():
            found[key] = merged(base[key], value) if key in base else copy.deepcopy(value)
        return found
    named = isinstance(base, list) and isinstance(patch, list) and all(
        isinstance(item, dict) and "name" in item for item in base + patch)
    if named:
        found = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = [i for i, old in enumerate(found) if old["name"] == item["name"]]
            if at:
                found[at[0]] = merged(found[at[0]], item)
            else:
                found.append(copy.deepcopy(item))
        return found
    return copy.deepcopy(patch)


def trial_jobset(trainjob: dict, objects: list[dict]) -> dict:
    """The JobSet Trainer makes of a trial's TrainJob: the TrainJob's runtime patches merged into its
    runtime's JobSet template, then test_kubernetes.trainjob_jobset."""
    patched = []
    for obj in objects:
        if obj["kind"] in ("TrainingRuntime", "ClusterTrainingRuntime"):
            obj = copy.deepcopy(obj)
            for patch in trainjob["spec"].get("runtimePatches") or []:
                spec = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec")
                if spec:
                    obj["spec"]["template"]["spec"] = merged(obj["spec"]["template"]["spec"], spec)
        patched.append(obj)
    return trainjob_jobset(trainjob, patched)


def trial_pods(exp: dict, suffix: str = SUFFIX, values: dict[str, str] | None = None) -> dict[str, object]:
    """The pods of one trial of `exp`, by place (CHIEF, WORKER), with the labels their controllers give
    them: the training operator's for a TFJob; JobSet's and the Job controller's for a TrainJob's pods,
    which are its runtime's with its patches."""
    job = run_spec(exp, values or sample_values(exp))
    job["metadata"]["name"] = f"{exp['metadata']['name']}-{suffix}"
    if job["kind"] == "TrainJob":
        found = jobset_pods(trial_jobset(job, runtime_objects()), f"TrainJob/{job['metadata']['name']}")
    else:
        found = pods([job])
    return {each.where.split(".", 1)[1]: each for each in found}


# k8s.io/apimachinery's validation.IsDomainPrefixedPath (Trainer's webhook checks runtime patch managers with
# it): a DNS-1123 subdomain, '/', an HTTP path.
DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
HTTP_PATH = re.compile(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+")


def container_list(rjob: dict) -> list[dict]:
    return rjob["template"]["spec"]["template"]["spec"]["containers"]


def runtime_patch_problems(trainjob: dict, objects: list[dict]) -> list[str]:
    """Trainer v2.3.0's TrainJob validation of runtime patches (pkg/runtime/framework/plugins/jobset,
    Validate): a domain-prefixed manager; replicated jobs and containers that the runtime has; no env for
    the trainer's container `node` (env goes in spec.trainer.env)."""
    spec = trainjob["spec"]
    ref = spec["runtimeRef"]
    [runtime] = [obj for obj in objects
                 if obj["kind"] == ref.get("kind") and obj["metadata"]["name"] == ref["name"]]
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    containers = {rjob["name"]: {c["name"] for c in container_list(rjob)} for rjob in jobs}
    found = []
    for i, patch in enumerate(spec.get("runtimePatches") or []):
        at = f"TrainJob.spec.runtimePatches[{i}]"
        host, _, path = (patch.get("manager") or "").partition("/")
        if not (DNS_1123_SUBDOMAIN.fullmatch(host) and len(host) <= 253 and HTTP_PATH.fullmatch(path)):
            found.append(f"{at}.manager {patch.get('manager')!r}: must be a domain-prefixed path (such as "
                         "\"acme.io/foo\")")
        jobs = ((((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {})
                .get("replicatedJobs") or [])
        for rjob in jobs:
            if rjob.get("name") not in containers:
                found.append(f"{at}: must not have replicated job that doesn't exist in the runtime job "
                             f"template ({rjob.get('name')})")
                continue
            pod = ((((rjob.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {})
            for each in pod.get("containers") or []:
                if each.get("name") not in containers[rjob["name"]]:
                    found.append(f"{at}: must not have container that doesn't exist in the runtime job "
                                 f"{rjob['name']}")
                elif each.get("env") and each["name"] == katib_sweep.NODE:
                    found.append(f"{at}: must not have envs for the {katib_sweep.NODE} container")
    return found


def trainjob_trial_problems(job: dict) -> list[str]:
    """A trial's TrainJob: the vendored CRD schema and Trainer's and JobSet's rules (test_kubernetes_jobs),
    kubeflow-trainer-api's models, the runtime patches, and WORKERS beside numNodes (the launcher's
    cluster must be the pods Trainer makes)."""
    objects = runtime_objects()
    found = trainer_crd_problems(job, objects) + pydantic_problems(job, TrainerV1alpha1TrainJob, "TrainJob")
    if found:
        return found
    found = runtime_patch_problems(job, objects)
    trainer = job["spec"].get("trainer") or {}
    [runtime] = [obj for obj in objects if obj["kind"] == "TrainingRuntime"]
    nodes = trainer.get("numNodes", runtime["spec"]["mlPolicy"]["numNodes"])
    workers = {var["name"]: var.get("value") for var in trainer.get("env") or []}.get("WORKERS")
    if workers != str(nodes - 1):
        found.append(f"TrainJob.spec.trainer.env: WORKERS {workers!r}, want numNodes - 1 = {nodes - 1}")
    return found


def after_admission_problems(exp: dict) -> list[str]:
    """What the webhook lets through and Katib or the operator would trip over later."""
    spec, problems = exp["spec"], []
    algorithm = spec.get("algorithm") or {}
    allowed = ALGORITHM_SETTINGS.get(algorithm.get("algorithmName"), set())
    problems += [f"spec.algorithm.algorithmSettings: unknown setting {s.get('name')!r}"
                 for s in algorithm.get("algorithmSettings") or [] if s.get("name") not in allowed]
    if algorithm.get("algorithmName") == "grid":
        points = math.prod(len((p.get("feasibleSpace") or {}).get("list") or [None])
                           for p in spec.get("parameters") or [])
        if spec.get("maxTrialCount", 0) > points:
            problems.append(f"spec.maxTrialCount: Max Trial Count > all possible search combinations "
                            f"{points}")
    for setting in (spec.get("earlyStopping") or {}).get("algorithmSettings") or []:
        name, value = setting.get("name"), setting.get("value")
        least = {"min_trials_required": 1, "start_step": 1}.get(name)
        if least is None:
            problems.append(f"spec.earlyStopping: unknown setting {name} for algorithm medianstop")
        elif not re.fullmatch(r"-?\d+", str(value)) or int(value) < least:
            problems.append(f"spec.earlyStopping: {name} must be a whole number of at least {least}")
    for i, p in enumerate(spec.get("parameters") or []):
        problems += feasible_space_problems(p, f"spec.parameters[{i}]")
    template, kind = spec["trialTemplate"], trial_kind(exp)
    if kind not in OUTCOMES:
        return [*problems, f"spec.trialTemplate.trialSpec.kind {kind!r}: want one of {sorted(OUTCOMES)}"]
    for key, want in zip(("successCondition", "failureCondition"), OUTCOMES[kind], strict=True):
        match = CONDITION.fullmatch(template.get(key) or "")
        found = match.group(1) if match else None
        if found != want:
            problems.append(f"spec.trialTemplate.{key}: want the {kind} condition {want} "
                            f"({'found ' + found if found else 'no condition of a ' + kind})")
    problems += metrics_problems(exp)
    return problems


def feasible_space_problems(p: dict, where: str) -> list[str]:
    """A space the suggestion services can draw from, in the parameter's own type."""
    kind, space = p.get("parameterType"), p.get("feasibleSpace") or {}
    if kind in ("int", "double"):
        number = int if kind == "int" else float
        try:
            low, high = number(space.get("min")), number(space.get("max"))
        except (TypeError, ValueError):
            return [f"{where}.feasibleSpace: min and max must be {kind} numbers"]
        found = [] if low < high else [f"{where}.feasibleSpace: min must be below max"]
        if space.get("distribution") == "logUniform" and low <= 0:
            found.append(f"{where}.feasibleSpace: a logUniform range must lie above 0")
        return found
    values = space.get("list") or []
    found = [] if values else [f"{where}.feasibleSpace.list: empty"]
    if len(set(values)) != len(values):
        found.append(f"{where}.feasibleSpace.list: repeats a value")
    if kind == "discrete" and not all(re.fullmatch(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?", v) for v in values):
        found.append(f"{where}.feasibleSpace.list: a discrete list holds numbers")
    return found


# Katib 0.19's primary pod labels when the template gives none (experiment_defaults.go).
DEFAULT_PRIMARY_POD_LABELS = {"TFJob": {"training.kubeflow.org/job-role": "master"},
                              "TrainJob": {"jobset.sigs.k8s.io/replicatedjob-name": "node",
                                           "batch.kubernetes.io/job-completion-index": "0"}}


def primary_pod_problems(exp: dict) -> list[str]:
    """The primary pod labels select exactly the chief's pod (the TFJob's Chief, the TrainJob's pod 0,
    which app/scale/jobset_cluster.py makes the chief), the one that writes and prints the metrics, and it
    has the primary container."""
    template, kind = exp["spec"]["trialTemplate"], trial_kind(exp)
    wanted = template.get("primaryPodLabels") or DEFAULT_PRIMARY_POD_LABELS[kind]
    found = trial_pods(exp)
    selected = [where for where, each in found.items() if wanted.items() <= each.labels.items()]
    if selected != [CHIEF[kind]]:
        return [f"spec.trialTemplate.primaryPodLabels {wanted}: select {selected}, want the chief's pod only "
                f"({CHIEF[kind]})"]
    pod = found[CHIEF[kind]].spec
    if template.get("primaryContainerName") not in [c.get("name") for c in pod.get("containers", [])]:
        return [f"spec.trialTemplate.primaryContainerName {template.get('primaryContainerName')!r}: "
                "no such container in the chief's pod"]
    return []


def metrics_problems(exp: dict) -> list[str]:
    """The collector reads, while the trial runs, the lines the trainer prints (app/metric_lines.py)."""
    spec, problems = exp["spec"], []
    objective = spec["objective"]
    names = [objective.get("objectiveMetricName"), *(objective.get("additionalMetricNames") or [])]
    problems += [f"spec.objective: {name!r} is not a metric the trainer prints each epoch "
                 f"({', '.join(metric_lines.METRICS)})" for name in names if name not in metric_lines.METRICS]
    collector = spec.get("metricsCollectorSpec") or {}
    if (collector.get("collector") or {}).get("kind") != "StdOut":
        problems.append("spec.metricsCollectorSpec.collector.kind: want StdOut (TensorFlowEvent parses only "
                        "after the trial, so no early stopping, and reads an emptyDir)")
    formats = ((collector.get("source") or {}).get("filter") or {}).get("metricsFormat")
    if formats != [metric_lines.FILTER]:
        problems.append("spec.metricsCollectorSpec.source.filter.metricsFormat: want "
                        f"[{metric_lines.FILTER}]")
    return problems


def wrapped_command_problems(found: dict[str, object]) -> list[str]:
    """Katib's pod webhook runs the primary container as `sh -c "<command> <args> 1>... 2>&1 ..."`,
    the words joined by spaces (utils.go wrapWorkerContainer): each must reach the trainer whole."""
    problems = []
    for where, each in found.items():
        for one in each.spec.get("containers") or []:
            if not one.get("command"):
                problems.append(f"{where}: no command: Katib's webhook would ask the registry for the "
                                "image's")
            for word in one.get("command", []) + one.get("args", []):
                if shlex.quote(word) != word:
                    problems.append(f"{where}: {word!r} is split or expanded by the shell Katib wraps it in")
    return problems


def trial_problems(exp: dict) -> list[str]:
    """The trial's job (TFJob or TrainJob) by its own rules, then its pods: the command Katib wraps, the
    hardening, and the Experiment's label that the trials' NetworkPolicies select."""
    job = run_spec(exp, sample_values(exp))
    found = trainjob_trial_problems(job) if job.get("kind") == "TrainJob" else tfjob_problems(job)
    if found:
        return found
    every = trial_pods(exp)
    found = wrapped_command_problems(every)
    for where, each in every.items():
        found += hardening_problems(each.spec, f"trial.{where}")
        if each.labels.get(katib_sweep.INSTANCE_LABEL) != exp["metadata"]["name"]:
            found.append(f"trial.{where}: no label {katib_sweep.INSTANCE_LABEL}: {exp['metadata']['name']}, "
                         "so the trials' NetworkPolicies leave it open")
    return found


def problems(exp: dict) -> list[str]:
    """Each stage only once the one before accepts: as on a cluster, where the API server decodes, the
    webhook admits, and only then do Katib and the operator act; the primary pod is found among the pods of
    a trial job that was admitted."""
    found = model_problems(exp) or webhook_problems(exp)
    if found or trial_kind(exp) not in OUTCOMES:
        return found or after_admission_problems(exp)
    return after_admission_problems(exp) + (trial_problems(exp) or primary_pod_problems(exp))


# ---------------------------------------------------------------------------------------------------
# The real Experiments are valid


@pytest.mark.parametrize("which", EVERY)
def test_the_experiment_passes_every_check(experiments, which):
    assert problems(experiments[which]) == []


def test_the_strict_models_reach_every_field(experiments):
    """Not vacuous: the models know the Experiment's fields and types, down to the nested ones."""
    exp = copy.deepcopy(experiments["default"])
    exp["spec"]["parameters"][0]["feasibleSpace"]["min"] = 0.0005  # a number where Katib wants text
    exp["spec"]["trialTemplate"]["trialParameters"][0]["desciption"] = "a typo deep down"
    assert model_problems(exp) == [
        "Experiment.spec.parameters[0].feasibleSpace.min: Input should be a valid string "
        "(V1beta1Experiment), found float 0.0005",
        "Experiment.spec.trialTemplate.trialParameters[0].desciption: unknown field (V1beta1Experiment)"]


def test_the_models_alone_would_drop_unknown_fields_and_take_python_names(experiments):
    """Why pydantic_problems forbids extras: kubeflow-katib-api's from_dict (what the Katib SDK reads with)
    silently drops a misspelt field, and model_validate takes `max_trial_count` as well as `maxTrialCount`."""
    exp = copy.deepcopy(experiments["default"])
    assert V1beta1Experiment.from_dict(exp).to_dict() == exp
    rename(exp["spec"]["objective"], "objectiveMetricName", "metricName")
    assert "metricName" not in V1beta1Experiment.from_dict(exp).to_dict()["spec"]["objective"]
    assert model_problems(exp) == [
        "Experiment.spec.objective.metricName: unknown field (V1beta1Experiment)"]
    exp = copy.deepcopy(experiments["default"])
    rename(exp["spec"], "maxTrialCount", "max_trial_count")
    V1beta1Experiment.model_validate(exp, strict=True)  # taken by its Python name
    assert model_problems(exp) == ["Experiment.spec.max_trial_count: unknown field (V1beta1Experiment)"]


def test_the_sweep_maps_to_the_experiment(experiments):
    default, every = experiments["default"]["spec"], experiments["every kind"]["spec"]
    assert experiments["default"]["metadata"]["name"] == "default-trial"
    assert default["objective"]["type"] == "maximize" and default["objective"]["objectiveMetricName"] == \
        "val_accuracy"
    counts = (default["maxTrialCount"], default["parallelTrialCount"], default["maxFailedTrialCount"])
    assert counts == (12, 2, 12)
    assert default["algorithm"] == {"algorithmName": "tpe"}
    # sweeps/default.yaml's successive halving (Katib has none): medianstop at its first rung, once a rung's
    # worth of trials (reduction_factor) finished.
    pruning = load_sweep(str(DEFAULT), {}).pruning
    assert (pruning.pruner, pruning.min_epochs, pruning.reduction_factor) == ("successive-halving", 1, 3)
    assert default["earlyStopping"] == {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "1"}]}
    assert default["parameters"] == [
        {"name": "learning_rate", "parameterType": "double",
         "feasibleSpace": {"min": "0.0005", "max": "0.02", "distribution": "logUniform"}},
        {"name": "batch_size", "parameterType": "discrete",
         "feasibleSpace": {"list": ["64", "128", "256", "512"]}}]
    assert every["objective"]["type"] == "minimize" and every["algorithm"] == {"algorithmName": "random"}
    # Optuna may prune after epoch warmup + 1 once startup trials finished; Katib needs at least 1 of each.
    assert every["earlyStopping"]["algorithmSettings"] == [
        {"name": "min_trials_required", "value": "1"}, {"name": "start_step", "value": "3"}]
    kinds = {p["name"]: (p["parameterType"], p["feasibleSpace"].get("distribution"))
             for p in every["parameters"]}
    assert kinds == {"learning_rate": ("double", "uniform"), "batch_size": ("int", "logUniform"),
                     "epochs": ("int", "uniform"), "seed": ("discrete", None),
                     "lr_schedule": ("categorical", None)}
    assert "earlyStopping" not in experiments["grid"]["spec"]  # pruning: false
    for which in experiments.values():
        strategies = which["spec"]["objective"]["metricStrategies"]
        assert {s["value"] for s in strategies} == {"latest"}  # the last epoch's, as on one host


# ---------------------------------------------------------------------------------------------------
# Broken copies are rejected


def trial_container(exp):
    return exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"][
        "containers"][0]


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def spec_of(exp):
    return exp["spec"]


def template_of(exp):
    return exp["spec"]["trialTemplate"]


def parameter(exp, i=0):
    return exp["spec"]["parameters"][i]


def chief_pod(e):
    return template_of(e)["trialSpec"]["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]


def collector(e):
    return spec_of(e)["metricsCollectorSpec"]


def filters(e, *patterns):
    collector(e)["source"]["filter"]["metricsFormat"] = list(patterns)


def trial_parameters(e):
    return template_of(e)["trialParameters"]


def space(e, i=0):
    return parameter(e, i)["feasibleSpace"]


def condition(kind):
    return f'status.conditions.#(type=="{kind}")#|#(status=="True")#'


BREAKAGES = {
    # the models
    "misspelt spec field": (lambda e: rename(spec_of(e), "maxTrialCount", "maxTrials"),
                            "spec.maxTrials: unknown field"),
    "misspelt objective field": (
        lambda e: rename(spec_of(e)["objective"], "objectiveMetricName", "metricName"),
        ".metricName: unknown"),
    "misspelt feasibleSpace field": (lambda e: rename(space(e), "min", "minimum"), ".minimum: unknown"),
    "misspelt trialTemplate field": (
        lambda e: rename(template_of(e), "primaryPodLabels", "primaryPodLabel"), ".primaryPodLabel: unknown"),
    "trial count as text": (lambda e: spec_of(e).update(maxTrialCount="12"),
                            "maxTrialCount: Input should be a valid integer"),
    "a label value that is a number": (lambda e: template_of(e)["primaryPodLabels"].update(x=1),
                                       "primaryPodLabels.x: Input should be a valid string"),
    # the webhook
    "uppercase name": (lambda e: e["metadata"].update(name="Default-trial"), "metadata.name"),
    "name of 41 characters": (lambda e: e["metadata"].update(name="d" * 41), "metadata.name"),
    "no trials": (lambda e: spec_of(e).update(maxTrialCount=0), "spec.maxTrialCount: must be greater than 0"),
    "no parallel trials": (lambda e: spec_of(e).update(parallelTrialCount=0), "parallelTrialCount: must"),
    "negative failures": (lambda e: spec_of(e).update(maxFailedTrialCount=-1), "should not be less than 0"),
    "unknown resume policy": (lambda e: spec_of(e).update(resumePolicy="Always"), "invalid ResumePolicyType"),
    "no objective": (lambda e: spec_of(e).pop("objective"), "spec.objective: must be specified"),
    "no objective metric": (lambda e: spec_of(e)["objective"].pop("objectiveMetricName"),
                            "objectiveMetricName: must be specified"),
    "no trial template": (lambda e: spec_of(e).pop("trialTemplate"), "spec.trialTemplate: must be specified"),
    "no trial parameters": (lambda e: template_of(e).pop("trialParameters"), "trialParameters: must be"),
    "a trial spec and a config map": (lambda e: template_of(e).update(configMap={"configMapName": "x"}),
                                      "exactly one of trialSpec and configMap"),
    "more parallel than trials": (
        lambda e: spec_of(e).update(parallelTrialCount=13), "spec.parallelTrialCount"),
    "more failures than trials": (
        lambda e: spec_of(e).update(maxFailedTrialCount=13), "maxFailedTrialCount"),
    "objective type": (lambda e: spec_of(e)["objective"].update(type="maximise"), "spec.objective.type"),
    "objective among the additional": (
        lambda e: spec_of(e)["objective"]["additionalMetricNames"].append("val_accuracy"),
        "additionalMetricNames"),
    "unknown algorithm": (lambda e: spec_of(e)["algorithm"].update(algorithmName="optuna"), "algorithmName"),
    "unknown early stopping": (lambda e: spec_of(e)["earlyStopping"].update(algorithmName="median"),
                               "spec.earlyStopping.algorithmName"),
    "unknown parameter type": (lambda e: parameter(e).update(parameterType="float"), "parameterType: float"),
    "unknown distribution": (
        lambda e: space(e).update(distribution="loguniform"), "distribution: loguniform"),
    "a range without max": (lambda e: space(e).pop("max"), "max or min must be specified"),
    "a list with a min": (lambda e: space(e, 1).update(min="64"), ".max, .min and .step"),
    "no parameters": (lambda e: spec_of(e).update(parameters=[]), "spec.parameters or spec.nasConfig"),
    "no primary container": (lambda e: template_of(e).pop("primaryContainerName"), "primaryContainerName"),
    "no success condition": (lambda e: template_of(e).pop("successCondition"), "successCondition and"),
    "no failure condition": (lambda e: template_of(e).pop("failureCondition"), "successCondition and"),
    "a duplicated reference": (
        lambda e: trial_parameters(e).append({"name": "seed", "reference": "learning_rate"}), "duplicated"),
    "a trial parameter used nowhere": (
        lambda e: trial_parameters(e).append({"name": "unused", "reference": "${trialSpec.Namespace}"}),
        "unused in spec.trialParameters not found"),
    "a placeholder not defined": (
        lambda e: trial_container(e)["args"].extend(["--seed", "${trialParameters.seed}"]),
        "not found in spec.trialParameters"),
    "a reference to no parameter": (
        lambda e: trial_parameters(e)[1].update(reference="lr"), "reference lr does not exist"),
    "braces in a trial parameter name": (
        lambda e: trial_parameters(e)[0].update(name="run{name}"), "must not contain"),
    "a named trial spec": (
        lambda e: template_of(e)["trialSpec"]["metadata"].update(name="x"), "must be omitted"),
    "a trial spec without kind": (
        lambda e: template_of(e)["trialSpec"].pop("kind"), "Kind must be specified"),
    "unknown collector": (
        lambda e: collector(e)["collector"].update(kind="Stdout"), "invalid metrics collector kind"),
    "a filter that does not compile": (lambda e: filters(e, r"([\w-]+=(\d+)"), "invalid"),
    "a filter with one group": (lambda e: filters(e, r"[\w-]+=(\d+)"), "two top subexpressions"),
    # after admission
    "an algorithm setting tpe lacks": (
        lambda e: spec_of(e)["algorithm"].update(
            algorithmSettings=[{"name": "n_startup_trials", "value": "4"}]),
        "unknown setting 'n_startup_trials'"),
    "start_step 0": (
        lambda e: spec_of(e)["earlyStopping"]["algorithmSettings"][1].update(value="0"),
        "start_step must be"),
    "an unknown medianstop setting": (
        lambda e: spec_of(e)["earlyStopping"]["algorithmSettings"][0].update(name="min_trials"),
        "unknown setting min_trials"),
    "an inverted range": (lambda e: space(e).update(min="0.03"), "min must be below max"),
    "a log range from 0": (lambda e: space(e).update(min="0"), "must lie above 0"),
    "a range that is no number": (lambda e: space(e).update(max="high"), "must be double"),
    "a discrete list of words": (lambda e: space(e, 1).update(list=["small", "big"]), "holds numbers"),
    "an empty list": (lambda e: space(e, 1).update(list=[]), "feasibleSpace.list: empty"),
    "a batch Job's success condition": (
        lambda e: template_of(e).update(successCondition=condition("Complete")), "want the TFJob condition"),
    "success on failure": (lambda e: template_of(e).update(failureCondition=condition("Succeeded")),
                           "failureCondition: want the TFJob condition Failed"),
    "primary pods by a capitalised replica type": (
        lambda e: template_of(e).update(primaryPodLabels={"training.kubeflow.org/replica-type": "Chief"}),
        "select []"),
    "primary pods are the workers": (
        lambda e: template_of(e).update(primaryPodLabels={"training.kubeflow.org/replica-type": "worker"}),
        "select ['Worker[0]']"),
    "primary pods are all": (
        lambda e: template_of(e).update(primaryPodLabels={"app.kubernetes.io/component": "trainer"}),
        "want the chief's pod only"),
    "primary container not there": (
        lambda e: template_of(e).update(primaryContainerName="trainer"), "no such container"),
    "objective the trainer does not print": (
        lambda e: spec_of(e)["objective"].update(objectiveMetricName="test_accuracy"),
        "'test_accuracy' is not a metric the trainer prints"),
    "TensorFlowEvent collector": (
        lambda e: collector(e).update(collector={"kind": "TensorFlowEvent"},
                                      source={"fileSystemPath": {"path": "/app/logs", "kind": "Directory"}}),
        "want StdOut"),
    "another filter": (lambda e: filters(e, r"([\w-]+): ([\d.]+)"), "metricsFormat: want"),
    # the trial
    "a trial container not named tensorflow": (
        lambda e: trial_container(e).update(name="trainer"), "with name tensorflow"),
    "a trial replica type in lowercase": (
        lambda e: rename(template_of(e)["trialSpec"]["spec"]["tfReplicaSpecs"], "Worker", "worker"),
        "'worker'"),
    "a misspelt trial pod field": (
        lambda e: rename(trial_container(e), "volumeMounts", "volumeMount"), "'volumeMount'"),
    "a trial pod as root": (lambda e: chief_pod(e)["securityContext"].update(runAsUser=0), "runAsUser"),
    "a word with a space": (
        lambda e: trial_container(e)["args"].extend(["--data", "/my data"]), "'/my data'"),
    "no command": (lambda e: trial_container(e).pop("command"), "no command"),
    "trial pods without the Experiment's label": (
        lambda e: template_of(e)["trialSpec"]["spec"]["tfReplicaSpecs"]["Chief"]["template"]["metadata"][
            "labels"].pop(katib_sweep.INSTANCE_LABEL), "Chief[0]: no label"),
}


def trial_trainer(e):
    return template_of(e)["trialSpec"]["spec"]["trainer"]


def runtime_patch(e):
    return template_of(e)["trialSpec"]["spec"]["runtimePatches"][0]


def patched_job(e):
    return runtime_patch(e)["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]


# The same for the Experiment of TrainJob trials, where it differs.
TRAINJOB_BREAKAGES = {
    "a TFJob's success condition": (
        lambda e: template_of(e).update(successCondition=condition("Succeeded")),
        "successCondition: want the TrainJob condition Complete"),
    "a trial kind Katib is not given here": (
        lambda e: template_of(e)["trialSpec"].update(kind="PyTorchJob"), "want one of ['TFJob', 'TrainJob']"),
    "the TFJob's primary pod labels": (
        lambda e: template_of(e).update(primaryPodLabels={"training.kubeflow.org/job-role": "master"}),
        "select []"),
    "primary pods are every node": (
        lambda e: template_of(e)["primaryPodLabels"].pop("batch.kubernetes.io/job-completion-index"),
        "select ['node-0-0', 'node-0-1']"),
    "primary container tensorflow": (
        lambda e: template_of(e).update(primaryContainerName="tensorflow"), "no such container"),
    # the TrainJob: Trainer's CRD schema and kubeflow-trainer-api's models
    "a misspelt trainer field": (
        lambda e: rename(trial_trainer(e), "numNodes", "nodes"), "'nodes' was unexpected"),
    "numNodes as text": (lambda e: trial_trainer(e).update(numNodes="2"), "'2' is not of type 'integer'"),
    "a ClusterTrainingRuntime": (
        lambda e: template_of(e)["trialSpec"]["spec"]["runtimeRef"].pop("kind"),
        "want this namespace's TrainingRuntime"),
    "an experiment name too long for JobSet's pod names": (
        lambda e: e["metadata"].update(name="d" * 40), "pod names generated for this JobSet will exceed 63"),
    # Trainer's rules for runtime patches, and this project's
    "a patch manager without a domain": (
        lambda e: runtime_patch(e).update(manager="katib"), "must be a domain-prefixed path"),
    "a patch of a job the runtime lacks": (
        lambda e: patched_job(e).update(name="trainer"), "replicated job that doesn't exist"),
    "a patched container the runtime lacks": (
        lambda e: patched_job(e)["template"]["spec"]["template"].update(
            spec={"containers": [{"name": "tensorflow"}]}), "container that doesn't exist"),
    "WORKERS not numNodes - 1": (lambda e: trial_trainer(e).update(numNodes=3), "want numNodes - 1 = 2"),
    "no runtime patch, so pods without the Experiment's label": (
        lambda e: template_of(e)["trialSpec"]["spec"].pop("runtimePatches"), "node-0-0: no label"),
    "a word with a space": (lambda e: trial_trainer(e)["args"].extend(["--data", "/my data"]), "'/my data'"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_experiment_is_rejected(experiments, breakage):
    exp = copy.deepcopy(experiments["default"])
    break_it, expected = BREAKAGES[breakage]
    break_it(exp)
    found = problems(exp)
    assert found and any(expected in problem for problem in found), found


@pytest.mark.parametrize("breakage", TRAINJOB_BREAKAGES)
def test_a_broken_experiment_of_trainjob_trials_is_rejected(experiments, breakage):
    exp = copy.deepcopy(experiments["trainjob"])
    break_it, expected = TRAINJOB_BREAKAGES[breakage]
    break_it(exp)
    found = problems(exp)
    assert found and any(expected in problem for problem in found), found


@pytest.mark.parametrize("breakage, expected", [
    (lambda j: rename(j["spec"]["trainer"], "numNodes", "num_nodes"), [
        "TrainJob.spec.trainer.num_nodes: unknown field (TrainerV1alpha1TrainJob)"]),
    (lambda j: j["spec"]["runtimeRef"].update(kind=None, name=7), [
        "TrainJob.spec.runtimeRef.name: Input should be a valid string (TrainerV1alpha1TrainJob), "
        "found int 7"]),
    (lambda j: j["spec"]["runtimePatches"][0].update(trainingRuntimeSpec={"template": {"spec": {
        "replicatedJobs": [{"name": "node", "template": {"spec": {"parallelism": 3}}}]}}}), [
        "TrainJob.spec.runtimePatches[0].trainingRuntimeSpec.template.spec.replicatedJobs[0].template.spec"
        ".parallelism: unknown field (TrainerV1alpha1TrainJob)"]),
])
def test_the_trainer_models_refuse_a_broken_trainjob(experiments, breakage, expected):
    """kubeflow-trainer-api's models, strictly, on their own: a Python name, a wrong type, a field a runtime
    patch may not set (patches hold only what Trainer lets a manager change)."""
    job = run_spec(experiments["trainjob"], sample_values(experiments["trainjob"]))
    assert pydantic_problems(job, TrainerV1alpha1TrainJob, "TrainJob") == []
    breakage(job)
    assert pydantic_problems(job, TrainerV1alpha1TrainJob, "TrainJob") == expected


def test_grid_with_more_trials_than_points_is_rejected(experiments):
    exp = copy.deepcopy(experiments["grid"])
    exp["spec"]["maxTrialCount"] = exp["spec"]["maxFailedTrialCount"] = 5
    assert any("all possible search combinations 4" in p for p in problems(exp)), problems(exp)


# ---------------------------------------------------------------------------------------------------
# The trial: the single TFJob's (or TrainJob's) pods, the trainer's command, its real output


def test_the_trial_is_the_single_tfjob_but_for_its_name_and_command(experiments):
    """deploy/kubernetes/base/tfjob.yaml (as rendered, image tag and all) is the trial's TFJob, but for the
    name Katib gives it and the command: so the pods, the claim and the hardening are the same."""
    base = copy.deepcopy(only(kustomize(DEPLOY), "TFJob"))
    exp = experiments["every kind"]
    trial = run_spec(exp, sample_values(exp))
    for job in (base, trial):
        job["metadata"] = {"labels": job["metadata"]["labels"]}
        for spec in job["spec"]["tfReplicaSpecs"].values():
            # The trials' pods are told apart by their Experiment, for their NetworkPolicies.
            if job is trial:
                labels = spec["template"]["metadata"]["labels"]
                assert labels.pop(katib_sweep.INSTANCE_LABEL) == exp["metadata"]["name"]
            tensorflow = container(spec["template"]["spec"], katib_sweep.CONTAINER)
            tensorflow.pop("command", None)
            tensorflow.pop("args")
    assert trial == base
    for spec in run_spec(exp, sample_values(exp))["spec"]["tfReplicaSpecs"].values():
        assert mounts(spec["template"]["spec"], katib_sweep.CONTAINER)["/app/logs"] == \
            ("persistentVolumeClaim", "mnist-logs", False)


def test_the_trainjob_trial_is_the_single_trainjob_but_for_its_name_args_and_label(experiments):
    """deploy/kubernetes/trainjob's TrainJob is the TrainJob trial's but for the name Katib gives it, the
    trainer's flags and the runtime patch that labels its pods with the Experiment; the pods are the
    TrainingRuntime's, which deploy/kubernetes/sweep/trainjob applies as deploy/kubernetes/trainjob does."""
    rendered = kustomize(DEPLOY / "trainjob")
    base = copy.deepcopy(only(rendered, "TrainJob"))
    exp = experiments["every kind, trainjob"]
    trial = run_spec(exp, sample_values(exp))
    patch = trial["spec"].pop("runtimePatches")
    labels = {katib_sweep.INSTANCE_LABEL: exp["metadata"]["name"]}
    pods_patch = {"replicatedJobs": [{"name": "node", "template": {"spec": {"template": {
        "metadata": {"labels": labels}}}}}]}
    assert patch == [{"manager": katib_sweep.RUNTIME_PATCH_MANAGER,
                      "trainingRuntimeSpec": {"template": {"spec": pods_patch}}}]
    args = {}
    for job in (base, trial):
        job["metadata"] = {"labels": job["metadata"]["labels"]}
        args[job is trial] = job["spec"]["trainer"].pop("args")
    assert trial == base
    # The same flags as the TFJob trial's, for the same sweep.
    tfjob = run_spec(experiments["every kind"], sample_values(exp))
    assert args[True] == container(tfjob["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"],
                                   katib_sweep.CONTAINER)["args"]
    assert only(runtime_objects(), "TrainingRuntime") == only(rendered, "TrainingRuntime")
    for where, each in trial_pods(exp).items():
        node = container(each.spec, katib_sweep.NODE)
        assert node["command"] == ["python3", "-m", "app.scale.jobset_cluster"], where
        assert mounts(each.spec, katib_sweep.NODE)["/app/logs"] == ("persistentVolumeClaim", "mnist-logs",
                                                                    False)


def test_the_trial_command_is_the_images_entry_point():
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert katib_sweep.trial_pod_template([])["spec"]["containers"][0]["command"] == entrypoint


def trainer_settings(exp: dict, values: dict[str, str]) -> dict[str, Config]:
    """Each pod's trainer flags, its placeholders filled in, parsed by `python -m app`'s own parser (the
    TrainJob's launcher hands them on unchanged)."""
    primary = exp["spec"]["trialTemplate"]["primaryContainerName"]
    found = {}
    for where, each in trial_pods(exp, values=values).items():
        args = container(each.spec, primary)["args"]
        found[where] = Config(**vars(trainer_parser().parse_args(args))).validate()
    return found


def other_values(exp: dict) -> dict[str, str]:
    """The other end of each range, the first entry of each list."""
    spaces = {p["name"]: p["feasibleSpace"] for p in exp["spec"]["parameters"]}
    return {name: space["list"][0] if "list" in space else space["max"] for name, space in spaces.items()}


@pytest.mark.parametrize("which", EVERY)
def test_the_trainer_parses_the_trial_command(experiments, which):
    exp = experiments[which]
    fixed = {"default": {"epochs": 10}, "grid": {}, "trainjob": {"epochs": 10},
             "every kind": {"deterministic": True, "data": "/data/mnist.npz", "precision": "float32"}}[
        which.removesuffix(", trainjob")]
    for values in (sample_values(exp), other_values(exp)):
        for rtype, config in trainer_settings(exp, values).items():
            # The run folder is the trial's own name: <sweep>-trial-<Katib's suffix>.
            assert config.run_name == trial_name(exp) == f"{exp['metadata']['name']}-{SUFFIX}", rtype
            assert re.fullmatch(r"[a-z0-9-]+-trial-[a-z0-9]{8}", config.run_name), config.run_name
            assert (config.resume, config.strategy, config.log_dir) == ("auto", "auto", "logs"), rtype
            for name, value in values.items():
                assert str(getattr(config, name)) == value, (rtype, name)
            for name, value in fixed.items():
                assert getattr(config, name) == value, (rtype, name)


def test_a_command_the_trainer_refuses_is_found(experiments, capsys):
    exp = copy.deepcopy(experiments["default"])
    trial_container(exp)["args"][trial_container(exp)["args"].index("--learning-rate")] = "--lerning-rate"
    with pytest.raises(SystemExit) as stopped:
        trainer_settings(exp, sample_values(exp))
    assert stopped.value.code == 2 and "--lerning-rate" in capsys.readouterr().err


def collected(output: str, metric_names: list[str], filters: list[str]) -> list[tuple[str, str, str]]:
    """(timestamp, name, value) as Katib's StdOut collector reads them (parseLogsInTextFormat, Katib 0.19):
    only lines that mention a metric; a first word that parses as RFC 3339 is the timestamp, else the
    zero time; every match of every filter whose name is a metric."""
    found = []
    for text in output.split("\n"):
        if not any(name in text for name in metric_names):
            continue
        first = text.split(" ", 1)[0]
        try:
            datetime.datetime.fromisoformat(first.replace("Z", "+00:00"))
            stamp = first if " " in text else "0001-01-01T00:00:00Z"
        except ValueError:
            stamp = "0001-01-01T00:00:00Z"
        for pattern in filters:
            for name, value in (m.group(1, 2) for m in re.finditer(pattern, text)):
                if name.strip() in metric_names:
                    found.append((stamp, name.strip(), value.strip()))
    return found


def test_the_metric_line_is_what_the_filter_reads():
    text = metric_lines.line(2, 3, {"accuracy": 0.5, "loss": 1.25e-5, "val_accuracy": 0.98125,
                                    "val_loss": float("nan")},
                             now=datetime.datetime(2026, 12, 2, 14, 31, 28, 123456, datetime.timezone.utc))
    assert text == "2026-12-02T14:31:28.123456Z epoch 2/3: accuracy=0.5 loss=1.25e-05 val_accuracy=0.98125"
    assert re.findall(metric_lines.FILTER, text) == [("accuracy", "0.5"), ("loss", "1.25e-05"),
                                                     ("val_accuracy", "0.98125")]


# ---------------------------------------------------------------------------------------------------
# The command line


def sweep_cli(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_main(sweep_main, *args, cwd=cwd, env=env)


@pytest.mark.parametrize("trial, flags", [("tfjob", ()), ("tfjob", ("--katib-trial", "tfjob")),
                                          ("trainjob", ("--katib-trial", "trainjob"))])
def test_the_command_prints_the_experiment_and_writes_nothing(tmp_path, trial, flags):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "default.yaml").write_text(DEFAULT.read_text())
    result = sweep_cli("sweeps/default.yaml", "--katib", *flags, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    exp = generated(trial=trial)
    assert load_documents(result.stdout) == [exp, *katib_sweep.network_policies(exp)]
    assert trial_kind(exp) == {"tfjob": "TFJob", "trainjob": "TrainJob"}[trial]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweeps"]  # no logs/, no study


def test_flags_fix_settings_in_every_trial(tmp_path):
    result = sweep_cli(str(DEFAULT), "--katib", "--trials", "4", "--data", "/data/mnist.npz", cwd=tmp_path,
                       env={"SWEEP_ARGS": "--epochs 2"})
    assert result.returncode == 0, result.stderr
    exp, *policies = load_documents(result.stdout)
    assert exp["spec"]["maxTrialCount"] == 4 and {p["kind"] for p in policies} == {"NetworkPolicy"}
    config = trainer_settings(exp, sample_values(exp))[CHIEF["TFJob"]]
    assert (config.epochs, config.data) == (2, "/data/mnist.npz")


def test_the_command_imports_neither_optuna_nor_tensorflow():
    code = ("import sys, contextlib, io\nfrom app.sweep.__main__ import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['sweeps/default.yaml', '--katib']) == 0\n"
            "print(sorted(m for m in ('optuna', 'tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("text, flags, says", [
    (GRID.replace("name: grid", "name: My_Sweep"), (),
     "sweep name 'My_Sweep' cannot name a Katib Experiment"),
    (GRID.replace("name: grid", "name: " + "s" * 35), (), "at most 34 characters"),
    (GRID, ("--log-dir", "/elsewhere"), "--log-dir /elsewhere: trials write to the logs claim"),
    (GRID, ("--data", "/my data"), "'/my data': Katib joins the trial's command with spaces"),
    (GRID, ("--trials", "5"), "the grid has 4 points, so --trials can be at most 4 (got 5)"),
    (GRID.replace("trials: 4", "trials: 0"), (), "trials must be a whole number of at least 1"),
    (GRID, ("--batch-size", "32"), "--batch-size is a parameter of this sweep"),
    # A TrainJob's pods are named <trial>-node-0-<index>-<5 characters>, within 63 (JobSet's webhook).
    (GRID.replace("name: grid", "name: " + "s" * 34), ("--katib-trial", "trainjob"), "at most 33 characters"),
    (GRID, ("--katib-trial", "pytorchjob"), "argument --katib-trial: invalid choice: 'pytorchjob'"),
    (GRID, ("--katib-trial", "TrainJob"), "argument --katib-trial: invalid choice: 'TrainJob'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, text, flags, says):
    (tmp_path / "s.yaml").write_text(text)
    result = sweep_cli("s.yaml", "--katib", *flags, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_the_trial_kind_goes_only_with_katib(tmp_path):
    """--katib-trial without --katib would run a sweep on this machine, the flag silently ignored: refused."""
    (tmp_path / "s.yaml").write_text(GRID)
    result = sweep_cli("s.yaml", "--katib-trial", "trainjob", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: --katib-trial trainjob: only with --katib (what a Katib trial is)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    with pytest.raises(SweepError, match="--katib-trial mpijob: one of tfjob, trainjob"):
        katib_sweep.experiment(load_sweep(str(tmp_path / "s.yaml"), {}), "mpijob")


def test_the_help_names_the_flags():
    result = sweep_cli("--help", cwd=ROOT)
    text = " ".join(result.stdout.split())
    assert "--katib " in text and "--katib-trial KIND" in text and "sweeps-with-katib" in text
    assert "tfjob" in text and "trainjob" in text


# ---------------------------------------------------------------------------------------------------
# deploy/kubernetes/sweep and deploy/kubernetes/sweep/trainjob


@pytest.mark.parametrize("folder, flags", [(SWEEP_OVERLAY, ()),
                                           (TRAINJOB_OVERLAY, ("--katib-trial", "trainjob"))])
def test_the_committed_experiment_is_the_commands_output(folder, flags):
    result = sweep_cli("sweeps/default.yaml", "--katib", *flags, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    command = shlex.join(["python", "-m", "app.sweep", "sweeps/default.yaml", "--katib", *flags])
    assert (folder / "experiment.yaml").read_text() == result.stdout, (
        f"regenerate: {command} > {(folder / 'experiment.yaml').relative_to(ROOT)}")
    assert f"`{command} > experiment.yaml`" in (folder / "kustomization.yaml").read_text()


def test_the_sweep_overlay_renders_tensorboard_and_the_experiment_with_its_policies():
    objects = kustomize(SWEEP_OVERLAY)
    assert sorted((o["apiVersion"], o["kind"]) for o in objects) == [
        ("apps/v1", "Deployment"), ("kubeflow.org/v1beta1", "Experiment"),
        *[("networking.k8s.io/v1", "NetworkPolicy")] * 5, ("v1", "Service")]
    exp = only(objects, "Experiment")
    assert exp == generated()
    assert problems(exp) == []
    base = kustomize(DEPLOY)
    for kind in ("Deployment", "Service"):
        assert only(objects, kind) == only(base, kind), kind
        assert core_problems(only(objects, kind)) == []
    tensorboard_policy = [p for p in base if p["metadata"]["name"] == "mnist-tensorboard-deny-all"]
    def name(obj):
        return obj["metadata"]["name"]

    assert sorted((o for o in objects if o["kind"] == "NetworkPolicy"), key=name) == sorted(
        tensorboard_policy + katib_sweep.network_policies(exp), key=name)


def test_the_trainjob_sweep_overlay_renders_the_runtime_tensorboard_and_the_experiment_only():
    """deploy/kubernetes/trainjob's TrainingRuntime and TensorBoard, not its TrainJob mnist-trainjob nor that
    TrainJob's NetworkPolicies: the Experiment's trials are the only TrainJobs it makes."""
    objects = kustomize(TRAINJOB_OVERLAY)
    assert sorted((o["apiVersion"], o["kind"]) for o in objects) == [
        ("apps/v1", "Deployment"), ("kubeflow.org/v1beta1", "Experiment"),
        *[("networking.k8s.io/v1", "NetworkPolicy")] * 5,
        ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"), ("v1", "Service")]
    exp = only(objects, "Experiment")
    assert exp == generated(trial="trainjob")
    assert problems(exp) == []
    single = kustomize(DEPLOY / "trainjob")
    for kind in ("Deployment", "Service", "TrainingRuntime"):
        assert only(objects, kind) == only(single, kind), kind
    assert trainer_crd_problems(only(objects, "TrainingRuntime")) == []
    tensorboard_policy = [p for p in single if p["metadata"]["name"] == "mnist-tensorboard-deny-all"]

    def name(obj):
        return obj["metadata"]["name"]

    assert sorted((o for o in objects if o["kind"] == "NetworkPolicy"), key=name) == sorted(
        tensorboard_policy + katib_sweep.network_policies(exp), key=name)


def test_the_sweep_overlay_retags_the_trials_and_tensorboard_alike(tmp_path):
    objects = retagged(tmp_path, SWEEP_OVERLAY)
    exp = only(objects, "Experiment")
    replicas = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["tfReplicaSpecs"].values()
    found = [c["image"] for spec in replicas for c in spec["template"]["spec"]["containers"]]
    found += [c["image"] for c in only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]]
    assert found == [RETAGGED] * 3
    # The TrainJob trials run the runtime's image, which the same retag reaches.
    (tmp_path / "trainjob").mkdir()
    objects = retagged(tmp_path / "trainjob", TRAINJOB_OVERLAY)
    exp = only(objects, "Experiment")
    jobset = trial_jobset(run_spec(exp, sample_values(exp)), objects)
    found = [c["image"] for each in jobset_pods(jobset, "trial") for c in each.spec["containers"]]
    found += [c["image"] for c in only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]]
    assert found == [RETAGGED] * 3


# ---------------------------------------------------------------------------------------------------
# The trials' NetworkPolicies, and their pods under the restricted Pod Security Standard


@pytest.mark.parametrize("which", EVERY)
def test_every_trial_pod_is_isolated_and_reaches_only_its_experiments_trials(experiments, which):
    exp = experiments[which]
    chief, worker = CHIEF[trial_kind(exp)], WORKER[trial_kind(exp)]
    policies = katib_sweep.network_policies(exp)
    assert [network_policy_problems(p) for p in policies] == [[]] * len(policies)
    one, another = trial_pods(exp), trial_pods(exp, "c4d8n2wq")
    for each in (*one.values(), *another.values()):
        assert any(denies_all(p) and label_selects(p["spec"]["podSelector"], each.labels) for p in policies)
    # One trial's chief and worker reach each other; so do two trials of one Experiment (a NetworkPolicy
    # cannot name a trial's job before Katib does).
    assert allowed(policies, one[chief], one[worker], 2222)
    assert allowed(policies, one[worker], one[chief], 2222)
    assert allowed(policies, another[chief], one[worker], 2222)
    # Nothing else does: another Experiment's trials, the single TFJob, JobSet and TrainJob, TensorBoard, any
    # other pod.
    name = exp["metadata"]["name"]
    other_exp = json.loads(json.dumps(exp).replace(f'"{katib_sweep.INSTANCE_LABEL}": "{name}"',
                                                   f'"{katib_sweep.INSTANCE_LABEL}": "other-trial"'))
    other_exp["metadata"]["name"] = "other-trial"
    single = [obj for folder in (DEPLOY, DEPLOY / "jobset", DEPLOY / "trainjob") for obj in kustomize(folder)]
    everything = policies + katib_sweep.network_policies(other_exp) + [
        p for p in single if p["kind"] == "NetworkPolicy"]
    training = by_where(single)
    outsiders = [*trial_pods(other_exp).values(), training["TFJob/mnist-tfjob.Chief[0]"],
                 training["JobSet/mnist-jobset.node-0-1"], training["TrainJob/mnist-trainjob.node-0-1"],
                 training["Deployment/mnist-tensorboard"], STRANGER]
    for outsider in outsiders:
        assert not allowed(everything, outsider, one[worker], 2222), outsider
        assert not allowed(everything, one[chief], outsider, 2222), outsider
    # Katib's collector in the chief reports to the DB manager and to the early-stopping service.
    assert allowed(policies, one[chief], KATIB_DB, katib_sweep.KATIB_DB_MANAGER_PORT)
    assert allowed(policies, one[chief], SUGGESTION, katib_sweep.KATIB_EARLY_STOPPING_PORT)
    assert not allowed(policies, one[chief], KATIB_DB, 5432)


@pytest.mark.parametrize("trial, folder, prefix, job_selector", [
    ("tfjob", DEPLOY, "mnist-tfjob-", {"matchLabels": {"training.kubeflow.org/job-name": "mnist-tfjob"}}),
    ("trainjob", DEPLOY / "trainjob", "mnist-trainjob-",
     {"matchLabels": {"jobset.sigs.k8s.io/jobset-name": "mnist-trainjob"}}),
])
def test_the_trial_policies_are_the_single_jobs_but_for_the_selector(trial, folder, prefix, job_selector):
    """Trials and the single TFJob (or TrainJob) are let reach the same things, but for Katib's services."""
    exp = generated(trial=trial)
    trials = {p["metadata"]["name"].removeprefix("default-trial-"): p
              for p in katib_sweep.network_policies(exp)}
    single = {p["metadata"]["name"].removeprefix(prefix): p for p in kustomize(folder)
              if p["kind"] == "NetworkPolicy" and p["metadata"]["name"].startswith(prefix)}
    assert sorted(trials) == sorted([*single, "katib"])
    trial_selector = trials["deny-all"]["spec"]["podSelector"]
    for name, policy in single.items():
        text = json.dumps(policy["spec"]).replace(json.dumps(job_selector), json.dumps(trial_selector))
        assert json.loads(text) == trials[name]["spec"], name


# Katib 0.19's pod webhook on a trial's primary pod with the StdOut collector (v0.19.0,
# pkg/webhook/v1beta1/pod/inject_webhook.go and utils.go; its other arguments and labels left out): the
# command run through `sh -c` into a file on an emptyDir at /var/log/katib, a shared process namespace, and
# the sidecar metrics-logger-and-collector, whose securityContext is a copy of the pod's first container's
# (here the primary) only when katib-config sets init.controller.injectSecurityContext: true.
COLLECTOR = "metrics-logger-and-collector"


def katib_mutated(pod_spec: dict, primary: str, inject_security_context: bool) -> dict:
    pod = copy.deepcopy(pod_spec)
    pod["shareProcessNamespace"] = True
    pod["volumes"].append({"name": "metrics-volume", "emptyDir": {}})
    mount = {"name": "metrics-volume", "mountPath": "/var/log/katib"}
    main = container(pod, primary)
    main["command"] = ["sh", "-c", " ".join(main.pop("command") + main.pop("args", []))
                       + " 1>/var/log/katib/metrics.log 2>&1 && echo completed > /var/log/katib/$$$$.pid"]
    main["volumeMounts"].append(mount)
    sidecar = {"name": COLLECTOR, "image": "ghcr.io/kubeflow/katib/file-metrics-collector:v0.19.0",
               "args": ["-path", "/var/log/katib/metrics.log"],
               "resources": {"requests": {"cpu": "50m", "memory": "10Mi"},
                             "limits": {"cpu": "500m", "memory": "100Mi"}},
               "volumeMounts": [dict(mount)]}
    if inject_security_context:
        sidecar["securityContext"] = copy.deepcopy(main.get("securityContext"))
    pod["containers"].append(sidecar)
    return pod


@pytest.mark.parametrize("which", ["default", "trainjob"])
@pytest.mark.parametrize("inject", [False, True])
def test_the_trial_chief_with_katibs_collector_is_restricted_only_with_inject_security_context(experiments,
                                                                                              inject, which):
    exp = experiments[which]
    one = trial_pods(exp)
    primary = exp["spec"]["trialTemplate"]["primaryContainerName"]
    assert one[CHIEF[trial_kind(exp)]].spec["containers"][0]["name"] == primary  # what Katib copies from
    chief = katib_mutated(one[CHIEF[trial_kind(exp)]].spec, primary, inject)
    assert pod_template_problems({"spec": chief}, "trial chief") == []
    found = restricted_problems(chief, "chief")
    if inject:
        assert found == []
        assert hardening_problems(chief, "chief") == []  # the read-only root filesystem too
    else:
        assert found == [f"chief.containers[{COLLECTOR}]: allowPrivilegeEscalation != false",
                         f"chief.containers[{COLLECTOR}]: unrestricted capabilities (must drop ALL)"]
    # Katib adds its collector to the primary pod only: the workers are as the trial template says.
    assert restricted_problems(one[WORKER[trial_kind(exp)]].spec, "worker") == []


def test_the_docs_show_the_commands():
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    for command in ("python -m app.sweep sweeps/default.yaml --katib",
                    "python -m app.sweep sweeps/default.yaml --katib --katib-trial trainjob",
                    "kubectl apply -k deploy/kubernetes/sweep",
                    "kubectl apply -k deploy/kubernetes/sweep/trainjob",
                    "experiment/default-trial", "OptimizationJob"):
        assert command in text, command
    assert "docs/kubernetes.md#sweeps-with-katib" in (ROOT / "app" / "sweep" / "katib.py").read_text()
    assert "## Sweeps with Katib" in text
    assert "kubernetes.md#sweeps-with-katib" in (ROOT / "docs" / "sweeps.md").read_text()
