"""The Katib Experiment of `python -m app.sweep FILE --katib`, checked offline: no cluster, no Katib.

What checks what (Katib 0.19.0, training operator release 1.9; docs/kubernetes.md#sweeps-with-katib):

- The Experiment against kubeflow-katib 0.19.0's models (generated from Katib's OpenAPI spec), strictly:
  test_kubernetes.strict_model_problems walks their `attribute_map`/`openapi_types` (unknown fields and
  wrong types are problems); then the SDK's own deserializer, and what it reads back must be what was
  written.
- The rules of Katib's validating webhook (pkg/webhook/v1beta1/experiment/validator/validator.go),
  rewritten: name, counts, objective, algorithm and early stopping known, parameters and their feasible
  spaces, the trial template (success and failure conditions, every trialParameters entry used in the
  trial spec and every placeholder defined, references to parameters or trial metadata, no name in the
  trial spec), the metrics collector and its filter.
- What Katib does after admission, from its sources: the suggestion services' and medianstop's settings,
  Katib's grid (no more trials than points), feasible spaces that the services can draw from (numbers,
  min < max, log-uniform above 0), the StdOut collector's `sh -c` wrapping (pod webhook utils.go), the
  primary pod labels against the labels the training operator gives each replica's pod, success and
  failure conditions that name a TFJob's condition types.
- The trial, as Katib's manifest generator makes it (placeholders replaced, name set): a TFJob that
  passes every TFJob check of test_kubernetes.py, with deploy/kubernetes/base/tfjob.yaml's pod
  template; its command parsed by the trainer's own parser; and (tests/integration/test_katib_trials.py)
  run for real for one epoch, its output parsed as Katib's collector parses it, which must give the
  objective and every additional metric.
- deploy/kubernetes/sweep rendered with kubectl's kustomize: TensorBoard and an Experiment equal to the
  command's output, no claim (deploy/kubernetes/storage holds it).
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
import json
import math
import re
import shlex
import subprocess
import sys

import pytest
from helpers import ROOT, cli_env, run_main
from kubeflow.training.utils.utils import FakeResponse
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
    kustomize,
    label_selects,
    load_documents,
    mounts,
    network_policy_problems,
    only,
    operator_pod_labels,
    pod_template_problems,
    pods,
    restricted_problems,
    retagged,
    strict_model_problems,
    tfjob_problems,
)

from app import metric_lines
from app.__main__ import parser as trainer_parser
from app.config import Config
from app.sweep import katib as katib_sweep
from app.sweep.__main__ import main as sweep_main
from app.sweep.spec import load as load_sweep

try:
    from kubeflow import katib
except ImportError:  # pragma: no cover - a .venv made by hand
    pytest.fail("kubeflow-katib not installed: pip install --no-deps -r requirements-katib.txt "
                "(make .venv/.installed does)", pytrace=False)

SWEEP_OVERLAY = DEPLOY / "sweep"
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
# The TFJob's condition types (kubeflow.org/v1 JobConditionType).
TFJOB_CONDITIONS = {"Created", "Running", "Restarting", "Succeeded", "Failed", "Suspended"}
CONDITION = re.compile(r'status\.conditions\.#\(type=="(\w+)"\)#\|#\(status=="True"\)#')
# Katib's consts.TrialTemplateParamReplaceFormatRegex and TrialTemplateMetaReplaceFormatRegex.
PARAMETER_PLACEHOLDER = re.compile(r"\$\{trialParameters\..+?\}")
META_REFERENCE = re.compile(r"\$\{trialSpec\.(.+?)\}")


def generated(text: str | None = None, *flags: str, tmp_path=None) -> dict:
    """The Experiment of sweep file DEFAULT (or of `text`), as the command builds it."""
    path = DEFAULT
    if text is not None:
        path = tmp_path / "sweep.yaml"
        path.write_text(text)
    given = vars(trainer_parser().parse_args(list(flags)))
    return katib_sweep.experiment(load_sweep(str(path), given))


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("sweeps")
    return {"default": generated(),
            "every kind": generated(EVERY_KIND, tmp_path=folder),
            "grid": generated(GRID, tmp_path=folder)}


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


def model_problems(exp: dict) -> list[str]:
    """Field names and types against kubeflow-katib's models, then its deserializer, read back."""
    found = strict_model_problems(exp, "V1beta1Experiment", "Experiment", models=katib.models)
    return found + sdk_problems(exp)


def sdk_problems(exp: dict) -> list[str]:
    """What kubeflow-katib's own deserializer (KatibClient.get_experiment's) makes of it must be what
    was written: it drops what it does not know, and refuses what it cannot convert."""
    client = katib.ApiClient()
    try:
        read = client.deserialize(FakeResponse(exp), "V1beta1Experiment")
    except (ValueError, TypeError, AttributeError) as error:
        return [f"kubeflow-katib refuses it: {error}"]
    if client.sanitize_for_serialization(read) != exp:
        return ["kubeflow-katib reads back something else than was written"]
    return []


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
    template = spec["trialTemplate"]
    for key, want in (("successCondition", "Succeeded"), ("failureCondition", "Failed")):
        match = CONDITION.fullmatch(template.get(key) or "")
        found = match.group(1) if match else None
        if found != want:
            problems.append(f"spec.trialTemplate.{key}: want the TFJob condition {want} "
                            f"({'found ' + found if found else 'no condition of a TFJob'})")
    problems += primary_pod_problems(exp)
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


def primary_pod_problems(exp: dict) -> list[str]:
    """The primary pod labels select exactly the Chief's pod, the one that writes and prints the
    metrics, and it has the primary container."""
    template = exp["spec"]["trialTemplate"]
    job = run_spec(exp, sample_values(exp))
    wanted = template.get("primaryPodLabels") or {"training.kubeflow.org/job-role": "master"}
    selected = [(rtype, i) for rtype, spec in job["spec"]["tfReplicaSpecs"].items()
                for i in range(spec.get("replicas", 1))
                if wanted.items() <= operator_pod_labels(job, rtype, i).items()]
    if selected != [("Chief", 0)]:
        return [f"spec.trialTemplate.primaryPodLabels {wanted}: select {selected}, want the Chief's pod only"]
    pod = job["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]
    if template.get("primaryContainerName") not in [c.get("name") for c in pod.get("containers", [])]:
        return [f"spec.trialTemplate.primaryContainerName {template.get('primaryContainerName')!r}: "
                "no such container in the Chief's pod"]
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


def wrapped_command_problems(job: dict) -> list[str]:
    """Katib's pod webhook runs the primary container as `sh -c "<command> <args> 1>... 2>&1 ..."`,
    the words joined by spaces (utils.go wrapWorkerContainer): each must reach the trainer whole."""
    found = []
    for rtype, spec in job["spec"]["tfReplicaSpecs"].items():
        for each in spec["template"]["spec"].get("containers") or []:
            if not each.get("command"):
                found.append(f"{rtype}: no command: Katib's webhook would ask the registry for the image's")
            for word in each.get("command", []) + each.get("args", []):
                if shlex.quote(word) != word:
                    found.append(f"{rtype}: {word!r} is split or expanded by the shell Katib wraps it in")
    return found


def trial_problems(exp: dict) -> list[str]:
    job = run_spec(exp, sample_values(exp))
    found = tfjob_problems(job) + wrapped_command_problems(job)
    for rtype, spec in job["spec"]["tfReplicaSpecs"].items():
        found += hardening_problems(spec["template"]["spec"], f"trial.{rtype}")
    return found


def problems(exp: dict) -> list[str]:
    """Each stage only once the one before accepts: as on a cluster, where the API server decodes, the
    webhook admits, and only then do Katib and the operator act."""
    return (model_problems(exp) or webhook_problems(exp)
            or after_admission_problems(exp) + trial_problems(exp))


# ---------------------------------------------------------------------------------------------------
# The real Experiments are valid


@pytest.mark.parametrize("which", ["default", "every kind", "grid"])
def test_the_experiment_passes_every_check(experiments, which):
    assert problems(experiments[which]) == []


def test_the_strict_walk_reaches_every_field(experiments):
    """Not vacuous: the walk knows the Experiment's fields and types, down to the nested ones."""
    exp = copy.deepcopy(experiments["default"])
    exp["spec"]["parameters"][0]["feasibleSpace"]["min"] = 0.0005  # a number where Katib wants text
    assert any("feasibleSpace.min: expected str" in p for p in model_problems(exp)), model_problems(exp)


def test_the_sweep_maps_to_the_experiment(experiments):
    default, every = experiments["default"]["spec"], experiments["every kind"]["spec"]
    assert experiments["default"]["metadata"]["name"] == "default-trial"
    assert default["objective"]["type"] == "maximize" and default["objective"]["objectiveMetricName"] == \
        "val_accuracy"
    counts = (default["maxTrialCount"], default["parallelTrialCount"], default["maxFailedTrialCount"])
    assert counts == (12, 2, 12)
    assert default["algorithm"] == {"algorithmName": "tpe"}
    assert default["earlyStopping"] == {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "1"}]}
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
    "misspelt spec field": (lambda e: rename(spec_of(e), "maxTrialCount", "maxTrials"), "'maxTrials'"),
    "misspelt objective field": (
        lambda e: rename(spec_of(e)["objective"], "objectiveMetricName", "metricName"), "'metricName'"),
    "misspelt feasibleSpace field": (lambda e: rename(space(e), "min", "minimum"), "'minimum'"),
    "misspelt trialTemplate field": (
        lambda e: rename(template_of(e), "primaryPodLabels", "primaryPodLabel"), "'primaryPodLabel'"),
    "trial count as text": (lambda e: spec_of(e).update(maxTrialCount="12"), "maxTrialCount: expected int"),
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
        "select [('Worker', 0)]"),
    "primary pods are all": (
        lambda e: template_of(e).update(primaryPodLabels={"app.kubernetes.io/component": "trainer"}),
        "want the Chief's pod only"),
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
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_experiment_is_rejected(experiments, breakage):
    exp = copy.deepcopy(experiments["default"])
    break_it, expected = BREAKAGES[breakage]
    break_it(exp)
    found = problems(exp)
    assert found and any(expected in problem for problem in found), found


def test_the_sdk_reads_back_only_what_it_knows(experiments):
    assert sdk_problems(experiments["default"]) == []
    exp = copy.deepcopy(experiments["default"])
    rename(exp["spec"]["objective"], "objectiveMetricName", "metricName")
    assert sdk_problems(exp) == ["kubeflow-katib reads back something else than was written"]


def test_grid_with_more_trials_than_points_is_rejected(experiments):
    exp = copy.deepcopy(experiments["grid"])
    exp["spec"]["maxTrialCount"] = exp["spec"]["maxFailedTrialCount"] = 5
    assert any("all possible search combinations 4" in p for p in problems(exp)), problems(exp)


# ---------------------------------------------------------------------------------------------------
# The trial: the single TFJob's pods, the trainer's command, its real output


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


def test_the_trial_command_is_the_images_entry_point():
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert katib_sweep.trial_pod_template([])["spec"]["containers"][0]["command"] == entrypoint


def trainer_settings(exp: dict, values: dict[str, str]) -> dict[str, Config]:
    """Each replica's command, its placeholders filled in, parsed by `python -m app`'s own parser."""
    found = {}
    for rtype, spec in run_spec(exp, values)["spec"]["tfReplicaSpecs"].items():
        args = container(spec["template"]["spec"], katib_sweep.CONTAINER)["args"]
        found[rtype] = Config(**vars(trainer_parser().parse_args(args))).validate()
    return found


def other_values(exp: dict) -> dict[str, str]:
    """The other end of each range, the first entry of each list."""
    spaces = {p["name"]: p["feasibleSpace"] for p in exp["spec"]["parameters"]}
    return {name: space["list"][0] if "list" in space else space["max"] for name, space in spaces.items()}


@pytest.mark.parametrize("which", ["default", "every kind", "grid"])
def test_the_trainer_parses_the_trial_command(experiments, which):
    exp = experiments[which]
    fixed = {"default": {"epochs": 3}, "grid": {},
             "every kind": {"deterministic": True, "data": "/data/mnist.npz", "precision": "float32"}}[which]
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


def test_the_command_prints_the_experiment_and_writes_nothing(tmp_path):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "default.yaml").write_text(DEFAULT.read_text())
    result = sweep_cli("sweeps/default.yaml", "--katib", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    exp = generated()
    assert load_documents(result.stdout) == [exp, *katib_sweep.network_policies(exp)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweeps"]  # no logs/, no study


def test_flags_fix_settings_in_every_trial(tmp_path):
    result = sweep_cli(str(DEFAULT), "--katib", "--trials", "4", "--data", "/data/mnist.npz", cwd=tmp_path,
                       env={"SWEEP_ARGS": "--epochs 2"})
    assert result.returncode == 0, result.stderr
    exp, *policies = load_documents(result.stdout)
    assert exp["spec"]["maxTrialCount"] == 4 and {p["kind"] for p in policies} == {"NetworkPolicy"}
    config = trainer_settings(exp, sample_values(exp))["Chief"]
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
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, text, flags, says):
    (tmp_path / "s.yaml").write_text(text)
    result = sweep_cli("s.yaml", "--katib", *flags, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_the_help_names_the_flag():
    result = sweep_cli("--help", cwd=ROOT)
    assert "--katib" in result.stdout and "sweeps-with-katib" in " ".join(result.stdout.split())


# ---------------------------------------------------------------------------------------------------
# deploy/kubernetes/sweep


def test_the_committed_experiment_is_the_commands_output():
    result = sweep_cli("sweeps/default.yaml", "--katib", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (SWEEP_OVERLAY / "experiment.yaml").read_text() == result.stdout, (
        "regenerate: python -m app.sweep sweeps/default.yaml --katib "
        "> deploy/kubernetes/sweep/experiment.yaml")


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


def test_the_sweep_overlay_retags_the_trials_and_tensorboard_alike(tmp_path):
    objects = retagged(tmp_path, SWEEP_OVERLAY)
    exp = only(objects, "Experiment")
    replicas = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["tfReplicaSpecs"].values()
    found = [c["image"] for spec in replicas for c in spec["template"]["spec"]["containers"]]
    found += [c["image"] for c in only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]]
    assert found == [RETAGGED] * 3


# ---------------------------------------------------------------------------------------------------
# The trials' NetworkPolicies, and their pods under the restricted Pod Security Standard


def trial_pods(exp: dict, suffix: str = SUFFIX) -> dict[str, object]:
    """The pods of one trial of `exp`, with the labels the training operator gives them."""
    job = run_spec(exp, sample_values(exp))
    job["metadata"]["name"] = f"{exp['metadata']['name']}-{suffix}"
    return {each.where.split(".", 1)[1]: each for each in pods([job])}


@pytest.mark.parametrize("which", ["default", "every kind", "grid"])
def test_every_trial_pod_is_isolated_and_reaches_only_its_experiments_trials(experiments, which):
    exp = experiments[which]
    policies = katib_sweep.network_policies(exp)
    assert [network_policy_problems(p) for p in policies] == [[]] * len(policies)
    one, another = trial_pods(exp), trial_pods(exp, "c4d8n2wq")
    for each in (*one.values(), *another.values()):
        assert any(denies_all(p) and label_selects(p["spec"]["podSelector"], each.labels) for p in policies)
    # One trial's chief and worker reach each other; so do two trials of one Experiment (a NetworkPolicy
    # cannot name a trial's TFJob before Katib does).
    assert allowed(policies, one["Chief[0]"], one["Worker[0]"], 2222)
    assert allowed(policies, one["Worker[0]"], one["Chief[0]"], 2222)
    assert allowed(policies, another["Chief[0]"], one["Worker[0]"], 2222)
    # Nothing else does: another Experiment's trials, the single TFJob, TensorBoard, any other pod.
    name = exp["metadata"]["name"]
    other_exp = json.loads(json.dumps(exp).replace(f'"{katib_sweep.INSTANCE_LABEL}": "{name}"',
                                                   f'"{katib_sweep.INSTANCE_LABEL}": "other-trial"'))
    other_exp["metadata"]["name"] = "other-trial"
    everything = policies + katib_sweep.network_policies(other_exp) + [
        p for p in kustomize(DEPLOY) if p["kind"] == "NetworkPolicy"]
    training = by_where(kustomize(DEPLOY))
    outsiders = [*trial_pods(other_exp).values(), training["TFJob/mnist-tfjob.Chief[0]"],
                 training["Deployment/mnist-tensorboard"], STRANGER]
    for outsider in outsiders:
        assert not allowed(everything, outsider, one["Worker[0]"], 2222), outsider
        assert not allowed(everything, one["Chief[0]"], outsider, 2222), outsider
    # Katib's collector in the chief reports to the DB manager and to the early-stopping service.
    assert allowed(policies, one["Chief[0]"], KATIB_DB, katib_sweep.KATIB_DB_MANAGER_PORT)
    assert allowed(policies, one["Chief[0]"], SUGGESTION, katib_sweep.KATIB_EARLY_STOPPING_PORT)
    assert not allowed(policies, one["Chief[0]"], KATIB_DB, 5432)


def test_the_trial_policies_are_the_single_tfjobs_but_for_the_selector():
    """Trials and the single TFJob are let reach the same things, but for Katib's services."""
    exp = generated()
    trials = {p["metadata"]["name"].removeprefix("default-trial-"): p
              for p in katib_sweep.network_policies(exp)}
    single = {p["metadata"]["name"].removeprefix("mnist-tfjob-"): p for p in kustomize(DEPLOY)
              if p["kind"] == "NetworkPolicy" and p["metadata"]["name"].startswith("mnist-tfjob-")}
    assert sorted(trials) == sorted([*single, "katib"])
    job_selector = {"matchLabels": {"training.kubeflow.org/job-name": "mnist-tfjob"}}
    trial_selector = trials["deny-all"]["spec"]["podSelector"]
    for name, policy in single.items():
        text = json.dumps(policy["spec"]).replace(json.dumps(job_selector), json.dumps(trial_selector))
        assert json.loads(text) == trials[name]["spec"], name


# Katib 0.19's pod webhook on a trial's primary pod with the StdOut collector (as documented in
# docs/kubernetes.md; its source was not at hand here): the command run through `sh -c` into a file on
# an emptyDir at /var/log/katib, a shared process namespace, and the sidecar metrics-logger-and-collector,
# whose securityContext is a copy of the primary container's only when katib-config sets
# init.controller.injectSecurityContext: true.
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


@pytest.mark.parametrize("inject", [False, True])
def test_the_trial_chief_with_katibs_collector_is_restricted_only_with_inject_security_context(experiments,
                                                                                              inject):
    exp = experiments["default"]
    one = trial_pods(exp)
    chief = katib_mutated(one["Chief[0]"].spec, exp["spec"]["trialTemplate"]["primaryContainerName"], inject)
    assert pod_template_problems({"spec": chief}, "trial chief") == []
    found = restricted_problems(chief, "chief")
    if inject:
        assert found == []
        assert hardening_problems(chief, "chief") == []  # the read-only root filesystem too
    else:
        assert found == [f"chief.containers[{COLLECTOR}]: allowPrivilegeEscalation != false",
                         f"chief.containers[{COLLECTOR}]: unrestricted capabilities (must drop ALL)"]
    # Katib adds its collector to the primary pod only: the workers are as the trial template says.
    assert restricted_problems(one["Worker[0]"].spec, "worker") == []


def test_the_docs_show_the_commands():
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    for command in ("python -m app.sweep sweeps/default.yaml --katib",
                    "kubectl apply -k deploy/kubernetes/sweep", "experiment/default-trial"):
        assert command in text, command
    assert "docs/kubernetes.md#sweeps-with-katib" in (ROOT / "app" / "sweep" / "katib.py").read_text()
    assert "## Sweeps with Katib" in text
    assert "kubernetes.md#sweeps-with-katib" in (ROOT / "docs" / "sweeps.md").read_text()
