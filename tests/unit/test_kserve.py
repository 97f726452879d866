"""deploy/kubernetes/serving (the KServe InferenceService) and its publish Job, checked offline: no
cluster, no KServe, no network.

What checks what (KServe v0.20.0; docs/kubernetes.md#serving-on-kubernetes-kserve):

- kustomize, the one built into kubectl, renders deploy/kubernetes/serving as `kubectl apply -k` would:
  exactly the InferenceService and its NetworkPolicy, and no claim (deleting the serving never deletes
  the runs). The NetworkPolicies of this folder and of the publish Job are checked with every other in
  tests/unit/test_kubernetes.py (valid, a default deny for each pod, no connection in or out).
- The InferenceService against KServe's own CRD schema for serving.kserve.io/v1beta1 at v0.20.0,
  vendored in tests/data/kserve/ (tools/vendor_kserve_schema.py), with jsonschema: every field name and
  type, strictly. Kubernetes prunes or (kubectl's strict field validation) refuses fields a structural
  schema does not name, so every object schema with `properties` and without
  `x-kubernetes-preserve-unknown-fields` is closed here. Its metadata, which the CRD leaves open, against
  Kubernetes' ObjectMeta (kubernetes-validate, strict).
- The rules of KServe's validating webhook that no schema expresses (v0.20.0,
  pkg/apis/serving/v1beta1/inference_service_validation.go), rewritten: a DNS-1035 name, exactly one
  predictor implementation, no `name` in a standard predictor, storageUri or storageUris not both, a
  storage scheme KServe knows (pkg/controller/v1beta1/inferenceservice/utils/utils.go).
- This project's rules: TensorFlow Serving through the runtime kserve-tensorflow-serving at
  TF_SERVING_VERSION (docker-compose.yml's serving image), the model folder that the publish Job
  writes to on the training's claim, the Standard deployment mode, the restricted Pod Security
  Standard of test_kubernetes.hardening_problems on the predictor's pod and container fields.
- The publish Job: Kubernetes' schema, the same hardening, the claim where the trainer has it, its
  arguments (with python -m app.publish's own parser when that module is there).

Every check is shown to reject a broken copy. What this cannot show: that KServe admits and runs it,
that its webhook mounts the claim's folder at /mnt/models, and that TensorFlow Serving 2.20.0 loads a
TensorFlow 2.21 export. No cluster ran here.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
from pathlib import PurePosixPath

import jsonschema
import pytest
import yaml
from helpers import ROOT
from test_kubernetes import (
    DEPLOY,
    RETAGGED,
    TRAINER_ARGS,
    container,
    core_problems,
    hardening_problems,
    kustomize,
    load_documents,
    mounts,
    only,
    retagged,
)

SERVING = DEPLOY / "serving"
PUBLISH = SERVING / "publish"
DOCS = ROOT / "docs" / "kubernetes.md"
SCHEMA = ROOT / "tests" / "data" / "kserve" / "inferenceservice-v1beta1.schema.json"
SCHEMA_README = SCHEMA.parent / "README.md"

KSERVE_TAG = "v0.20.0"
KSERVE_COMMIT = "1fb781055dd1567164358233e1125142ca6ef1fe"  # the tag's commit in github.com/kserve/kserve
# The one place this project's TensorFlow Serving version is written for Kubernetes: the InferenceService's
# runtimeVersion must be it, and docker-compose.yml's serving image must end with it.
TF_SERVING_VERSION = "2.20.0"
RUNTIME = "kserve-tensorflow-serving"  # KServe's ClusterServingRuntime for tensorflow, versions "1" and "2"
CLAIM = "mnist-logs"  # deploy/kubernetes/storage/logs-pvc.yaml
CLAIM_MOUNT = "/app/logs"  # where the trainer (and the publish Job) mount it
MODEL = "model"  # python -m app.publish --name: the model's folder in --models
STORAGE_URI = f"pvc://{CLAIM}/models/{MODEL}"
MODEL_CONTAINER = "kserve-container"  # KServe's name for the predictor's container (constants.go)

# KServe v0.20.0, inference_service_validation.go IsvcNameFmt; utils.go SupportedStorageURIPrefixList.
ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
STORAGE_PREFIXES = ("gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://", "webhdfs://",
                    "oci://", "oci+native://", "hf://")
# PredictorSpec's implementations (predictor.go GetImplementations): the frameworks, `model`, or containers.
IMPLEMENTATIONS = ("sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
                   "lightgbm", "paddle", "model")


# ---------------------------------------------------------------------------------------------------
# KServe's schema, made strict


def subschemas(node: dict) -> list[dict]:
    """The schemas directly inside `node` (a `properties` mapping's keys are field names, not keywords)."""
    found = list((node.get("properties") or {}).values())
    found += [node[k] for k in ("items", "additionalProperties") if isinstance(node.get(k), dict)]
    return found + [child for k in ("anyOf", "allOf", "oneOf") for child in node.get(k) or []]


def closed(node: dict) -> None:
    """Refuse unknown fields where Kubernetes would: an object schema that names its fields, unless it
    preserves unknown ones."""
    if ("properties" in node and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node):
        node["additionalProperties"] = False
    for child in subschemas(node):
        closed(child)


@functools.cache
def vendored() -> dict:
    return json.loads(SCHEMA.read_text())


@functools.cache
def validator() -> jsonschema.Draft202012Validator:
    schema = copy.deepcopy(vendored())
    closed(schema)
    for definition in schema["$defs"].values():
        closed(definition)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_problems(isvc: dict) -> list[str]:
    found = [f"InferenceService{''.join(f'.{p}' for p in error.absolute_path)}: {error.message} "
             f"(KServe {KSERVE_TAG} CRD)" for error in validator().iter_errors(isvc)]
    metadata = isvc.get("metadata")
    if isinstance(metadata, dict):  # the CRD says `type: object` only: Kubernetes checks ObjectMeta itself
        wrapped = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
        found += [p.replace("ConfigMap/metadata.", "InferenceService.", 1)
                  for p in core_problems(wrapped, "ConfigMap/metadata")]
    return found


# ---------------------------------------------------------------------------------------------------
# KServe's webhook and this project's rules


def predictor(isvc: dict) -> dict:
    return ((isvc.get("spec") or {}).get("predictor")) or {}


def admission_problems(isvc: dict) -> list[str]:
    """KServe v0.20.0's validating webhook, the rules no schema has."""
    found = []
    name = (isvc.get("metadata") or {}).get("name") or ""
    # What KServe makes from the name (the Deployment and Service <name>-predictor) must be a DNS-1035 label.
    if not ISVC_NAME.fullmatch(name) or len(f"{name}-predictor") > 63:
        found.append(f"metadata.name {name!r}: a DNS-1035 label, short enough for {name}-predictor (63)")
    pred = predictor(isvc)
    given = [key for key in IMPLEMENTATIONS if pred.get(key) is not None]
    given += ["containers"] if pred.get("containers") else []
    if len(given) != 1:
        found.append(f"spec.predictor: exactly one of {', '.join(IMPLEMENTATIONS)} or containers, "
                     f"found {given}")
    for key in given:
        implementation = pred.get(key)
        if isinstance(implementation, dict) and implementation.get("name"):
            found.append(f"spec.predictor.{key}.name: the 'name' field is not allowed in standard predictor")
    model = pred.get("model") or {}
    if model.get("storageUri") and pred.get("storageUris"):
        found.append("spec.predictor: setting both StorageURI and StorageURIs is not supported")
    uri = model.get("storageUri")
    if isinstance(uri, str) and not uri.startswith(STORAGE_PREFIXES):
        found.append(f"spec.predictor.model.storageUri {uri!r}: not one of KServe's schemes "
                     f"({', '.join(STORAGE_PREFIXES)})")
    return found


def predictor_pod(isvc: dict) -> dict:
    """The predictor's pod as KServe builds it from the InferenceService: the PodSpec fields inlined in
    spec.predictor, and the model's container fields in a container named kserve-container."""
    pred = predictor(isvc)
    pod = {key: value for key, value in pred.items() if key not in IMPLEMENTATIONS}
    model = {"name": MODEL_CONTAINER, **(pred.get("model") or {})}
    pod["containers"] = [model] + list(pred.get("containers") or [])
    return pod


def serving_problems(isvc: dict) -> list[str]:
    """This project's choices."""
    found = []
    model = predictor(isvc).get("model") or {}
    fmt = model.get("modelFormat") or {}
    if fmt.get("name") != "tensorflow" or fmt.get("version") not in (None, "2"):
        found.append(f"spec.predictor.model.modelFormat {fmt!r}: want tensorflow, version 2 "
                     f"(what {RUNTIME} serves, a TensorFlow 2 SavedModel)")
    if model.get("runtime") != RUNTIME:
        found.append(f"spec.predictor.model.runtime {model.get('runtime')!r}: want {RUNTIME}")
    if model.get("runtimeVersion") != TF_SERVING_VERSION:
        found.append(f"spec.predictor.model.runtimeVersion {model.get('runtimeVersion')!r}: want "
                     f"{TF_SERVING_VERSION!r} (the runtime's own tensorflow/serving:2.6.2 is too old)")
    for key in ("image", "command"):
        if key in model:
            found.append(f"spec.predictor.model.{key}: the runtime's (tensorflow/serving and its "
                         "tensorflow_model_server command) must run")
    if model.get("storageUri") != STORAGE_URI:
        found.append(f"spec.predictor.model.storageUri {model.get('storageUri')!r}: want {STORAGE_URI} "
                     "(where the publish Job writes)")
    mode = ((isvc.get("metadata") or {}).get("annotations") or {}).get("serving.kserve.io/deploymentMode")
    if mode != "Standard":
        found.append(f"metadata.annotations serving.kserve.io/deploymentMode {mode!r}: want Standard "
                     "(a plain Deployment: Knative gates a pod securityContext and claims behind flags)")
    resources = model.get("resources") or {}
    if not all((resources.get(kind) or {}).get("memory") for kind in ("requests", "limits")):
        found.append("spec.predictor.model.resources: want a memory request and limit")
    return found + hardening_problems(predictor_pod(isvc), "InferenceService.spec.predictor")


def isvc_problems(isvc: dict) -> list[str]:
    """Everything: the schema first; the rules after it only for an object of the right shape (they
    read its fields as the schema types them)."""
    found = []
    if (isvc.get("apiVersion"), isvc.get("kind")) != ("serving.kserve.io/v1beta1", "InferenceService"):
        found.append(f"expected apiVersion serving.kserve.io/v1beta1, kind InferenceService: found "
                     f"{isvc.get('apiVersion')}, {isvc.get('kind')}")
    found += schema_problems(isvc)
    return found or admission_problems(isvc) + serving_problems(isvc)


# ---------------------------------------------------------------------------------------------------
# Rendering


@pytest.fixture(scope="session")
def rendered() -> list[dict]:
    return kustomize(SERVING)


@pytest.fixture(scope="session")
def isvc(rendered) -> dict:
    return only(rendered, "InferenceService")


@pytest.fixture(scope="session")
def job() -> dict:
    return only(kustomize(PUBLISH), "Job")


def test_kustomize_renders_exactly_the_inferenceservice_its_policy_and_no_claim(rendered):
    assert [obj for obj in rendered if obj["kind"] == "InferenceService"] == load_documents(
        (SERVING / "inferenceservice.yaml").read_text())
    assert sorted((obj["apiVersion"], obj["kind"]) for obj in rendered) == [
        ("networking.k8s.io/v1", "NetworkPolicy"), ("serving.kserve.io/v1beta1", "InferenceService")]


def test_serving_is_a_separate_apply():
    """`kubectl apply -k deploy/kubernetes` (or gpu) neither serves nor publishes: both are applies of
    their own."""
    for folder in (DEPLOY, DEPLOY / "gpu"):
        assert [obj for obj in kustomize(folder) if obj["kind"] in ("InferenceService", "Job")] == [], folder


# ---------------------------------------------------------------------------------------------------
# The real manifests are valid


def test_the_inferenceservice_is_valid(isvc):
    assert isvc_problems(isvc) == []


def test_the_vendored_schema_is_kserves_v1beta1_at_the_pinned_tag():
    source = vendored()["x-kserve-source"]
    assert source["tag"] == KSERVE_TAG and source["commit"] == KSERVE_COMMIT
    assert source["path"] == "config/crd/full/serving.kserve.io_inferenceservices.yaml"
    readme = SCHEMA_README.read_text()
    for fact in (KSERVE_TAG, KSERVE_COMMIT, source["path"], source["sha256"], "Apache-2.0",
                 "tools/vendor_kserve_schema.py"):
        assert fact in readme, fact
    assert SCHEMA.stat().st_size < 200_000  # the CRD is ~2 MB: only what validation needs is kept
    # What a manifest is checked against: the InferenceService's top level and its spec.
    assert set(vendored()["properties"]) == {"apiVersion", "kind", "metadata", "spec"}


def test_the_closed_schema_still_leaves_open_what_kserve_leaves_open(isvc):
    """Maps (labels, annotations) stay open: an InferenceService with more labels and annotations is as
    valid as the real one. (In spec nothing has x-kubernetes-preserve-unknown-fields; only status did.)"""
    extra = copy.deepcopy(isvc)
    extra["metadata"]["labels"]["team"] = "vision"
    predictor(extra)["annotations"] = {"example.com/note": "any text"}
    assert schema_problems(extra) == []


# ---------------------------------------------------------------------------------------------------
# Broken copies are rejected


def model_of(i):
    return predictor(i)["model"]


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


ISVC_BREAKAGES = {
    # KServe's schema: unknown fields, at every depth, and wrong types
    "misspelt spec field": (lambda i: rename(i["spec"], "predictor", "predicter"), "'predicter'"),
    "misspelt model field": (lambda i: rename(model_of(i), "storageUri", "storageURI"), "'storageURI'"),
    "misspelt pod securityContext field": (lambda i: rename(predictor(i)["securityContext"], "runAsNonRoot",
                                                            "runAsNonroot"), "'runAsNonroot'"),
    "misspelt container securityContext field": (
        lambda i: rename(model_of(i)["securityContext"], "readOnlyRootFilesystem", "readOnlyRootFileSystem"),
        "'readOnlyRootFileSystem'"),
    "unknown field in modelFormat": (lambda i: model_of(i)["modelFormat"].update(flavour="keras"),
                                     "'flavour'"),
    "unknown top-level field": (lambda i: i.update(specification={}), "'specification'"),
    "minReplicas as text": (lambda i: predictor(i).update(minReplicas="one"), "minReplicas"),
    "runtimeVersion as a number": (lambda i: model_of(i).update(runtimeVersion=2.2), "runtimeVersion"),
    "capabilities as text": (lambda i: model_of(i)["securityContext"].update(capabilities="ALL"),
                             "capabilities"),
    "memory in words": (lambda i: model_of(i)["resources"]["limits"].update(memory="1 GB"), "memory"),
    "no modelFormat name": (lambda i: model_of(i)["modelFormat"].pop("name"), "'name' is a required"),
    # Kubernetes' ObjectMeta
    "misspelt metadata field": (lambda i: rename(i["metadata"], "labels", "lables"), "'lables'"),
    "a label value that is a number": (lambda i: i["metadata"]["labels"].update(tier=3), "tier"),
    # KServe's webhook
    "uppercase name": (lambda i: i["metadata"].update(name="MNIST-model"), "DNS-1035"),
    "name too long for its Service": (lambda i: i["metadata"].update(name="m" * 60), "DNS-1035"),
    "a name in the standard predictor": (lambda i: model_of(i).update(name="mnist"), "'name' field is not"),
    "two implementations": (lambda i: predictor(i).update(tensorflow={"storageUri": STORAGE_URI}),
                            "exactly one"),
    "no implementation": (lambda i: predictor(i).pop("model"), "exactly one"),
    "storageUri and storageUris": (lambda i: predictor(i).update(
        storageUris=[{"uri": STORAGE_URI, "mountPath": "/mnt/models"}]), "not supported"),
    "a scheme KServe does not know": (lambda i: model_of(i).update(storageUri="nfs://server/models/model"),
                                      "not one of KServe's schemes"),
    "wrong apiVersion": (lambda i: i.update(apiVersion="serving.kserve.io/v1alpha1"),
                         "serving.kserve.io/v1beta1"),
    # This project's choices
    "wrong modelFormat": (lambda i: model_of(i)["modelFormat"].update(name="sklearn"), "modelFormat"),
    "TensorFlow 1": (lambda i: model_of(i)["modelFormat"].update(version="1"), "modelFormat"),
    "another runtime": (lambda i: model_of(i).update(runtime="kserve-mlserver"), "runtime"),
    "the runtime's old image": (lambda i: model_of(i).pop("runtimeVersion"), "runtimeVersion"),
    "another TF Serving": (lambda i: model_of(i).update(runtimeVersion="2.19.1"), "runtimeVersion"),
    "an image of its own": (lambda i: model_of(i).update(image="tensorflow/serving:latest"), ".image"),
    "another folder": (lambda i: model_of(i).update(storageUri=f"pvc://{CLAIM}/models/other"), "storageUri"),
    "another claim": (lambda i: model_of(i).update(storageUri="pvc://other/models/model"), "storageUri"),
    "Knative mode": (lambda i: i["metadata"].pop("annotations"), "deploymentMode"),
    "no memory limit": (lambda i: model_of(i)["resources"]["limits"].pop("memory"), "memory"),
}


@pytest.mark.parametrize("breakage", ISVC_BREAKAGES)
def test_a_broken_inferenceservice_is_rejected(isvc, breakage):
    broken = copy.deepcopy(isvc)
    break_it, expected = ISVC_BREAKAGES[breakage]
    break_it(broken)
    found = isvc_problems(broken)
    assert any(expected in problem for problem in found), found


# Loosened against the restricted Pod Security Standard (and docker-compose.yml's lockdown).
LOOSENED = {
    "root allowed": (lambda i: predictor(i)["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    "runs as root": (lambda i: predictor(i)["securityContext"].update(runAsUser=0), "runAsUser"),
    "no seccomp profile": (lambda i: predictor(i)["securityContext"].pop("seccompProfile"), "seccompProfile"),
    "unconfined": (lambda i: predictor(i)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
                   "seccompProfile"),
    "no fsGroup": (lambda i: predictor(i)["securityContext"].pop("fsGroup"), "fsGroup"),
    "writable root filesystem": (lambda i: model_of(i)["securityContext"].update(
        readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    "privilege escalation": (lambda i: model_of(i)["securityContext"].update(allowPrivilegeEscalation=True),
                             "allowPrivilegeEscalation"),
    "capabilities kept": (lambda i: model_of(i)["securityContext"].pop("capabilities"), "capabilities"),
    "a capability added": (lambda i: model_of(i)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
                           "capabilities"),
    "privileged": (lambda i: model_of(i)["securityContext"].update(privileged=True), "privileged"),
    "the container as root": (lambda i: model_of(i)["securityContext"].update(runAsUser=0), "root"),
    "host network": (lambda i: predictor(i).update(hostNetwork=True), "hostNetwork"),
    "a sidecar not locked down": (lambda i: predictor(i).update(containers=[{"name": "sidecar",
                                                                            "image": "busybox"}]),
                                  "containers[sidecar]"),
}


@pytest.mark.parametrize("breakage", LOOSENED)
def test_a_loosened_predictor_is_rejected(isvc, breakage):
    broken = copy.deepcopy(isvc)
    break_it, expected = LOOSENED[breakage]
    break_it(broken)
    found = serving_problems(broken)
    assert any(expected in problem for problem in found), found


def test_the_schema_would_not_refuse_unknown_fields_unless_closed(isvc):
    """The strictness is this test's: KServe's schema as published leaves additionalProperties unset, so
    plain JSON Schema validation would let a misspelt field through."""
    broken = copy.deepcopy(isvc)
    rename(model_of(broken), "storageUri", "storageURI")
    assert list(jsonschema.Draft202012Validator(vendored()).iter_errors(broken)) == []
    assert any("'storageURI'" in problem for problem in schema_problems(broken))


# ---------------------------------------------------------------------------------------------------
# One TensorFlow Serving version, one model folder


def compose_serving_image() -> str | None:
    """docker-compose.yml's serving image, `${SERVING_IMAGE:-tensorflow/serving:X}` read as its default."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"].get("serving")
    return None if service is None else default_of(service["image"])


def default_of(image: str) -> str:
    default = re.fullmatch(r"\$\{\w+:?-(.+)\}", image)
    return default.group(1) if default else image


def compose_image_problems(image: str) -> list[str]:
    if image == f"tensorflow/serving:{TF_SERVING_VERSION}":
        return []
    return [f"docker-compose.yml serving image {image!r}: want tensorflow/serving:{TF_SERVING_VERSION}, "
            "the InferenceService's runtimeVersion"]


def test_kubernetes_serves_with_the_tf_serving_version_compose_runs(isvc):
    assert model_of(isvc)["runtimeVersion"] == TF_SERVING_VERSION
    image = compose_serving_image()
    if image is None:
        pytest.skip("docker-compose.yml has no serving service yet (make serve's service is being added "
                    "on main): its image cannot be compared")
    assert compose_image_problems(image) == []


@pytest.mark.parametrize("image", ["${SERVING_IMAGE:-tensorflow/serving:2.19.1}", "tensorflow/serving:2.6.2",
                                   "tensorflow/serving:latest", "tensorflow/serving",
                                   "example.com/serving:2.20.0"])
def test_another_compose_image_is_noticed(image):
    assert compose_image_problems(default_of(image)) != []
    same = f"${{SERVING_IMAGE:-tensorflow/serving:{TF_SERVING_VERSION}}}"
    assert compose_image_problems(default_of(same)) == []


def publish_arguments(args: list[str]) -> dict:
    """RUN, --models and --name of python -m app.publish's arguments (its defaults: models, model)."""
    run, rest = args[0], args[1:]
    options = dict(zip(rest[::2], rest[1::2], strict=True))
    return {"run": run, "models": options.get("--models", "models"), "name": options.get("--name", "model")}


def published_uri(job: dict) -> str:
    """Where the publish Job's versions land, as a KServe pvc:// URI: its --models/--name folder on the
    claim that its container mounts there."""
    pod = job["spec"]["template"]["spec"]
    args = publish_arguments(container(pod, "publish")["args"])
    folder = PurePosixPath(args["models"], args["name"])
    for mount_path, (kind, claim, _) in mounts(pod, "publish").items():
        if kind == "persistentVolumeClaim" and folder.is_relative_to(mount_path):
            return f"pvc://{claim}/{folder.relative_to(mount_path)}"
    raise AssertionError(f"{folder}: on no claim the publish Job mounts")


def test_the_publish_job_writes_where_the_inferenceservice_reads(isvc, job):
    pod = job["spec"]["template"]["spec"]
    publish = container(pod, "publish")
    assert publish["command"] == ["python3", "-m", "app.publish"]
    # The run that deploy/kubernetes trains, looked up where the trainer writes it (cwd /app: logs/fit).
    assert publish_arguments(publish["args"])["run"] == TRAINER_ARGS[TRAINER_ARGS.index("--run-name") + 1]
    assert mounts(pod, "publish")[CLAIM_MOUNT] == ("persistentVolumeClaim", CLAIM, False)
    assert published_uri(job) == model_of(isvc)["storageUri"] == STORAGE_URI


@pytest.mark.parametrize("option, value, expected", [
    ("--models", "/tmp/models", "on no claim"),  # the emptyDir: gone with the pod
    ("--models", "/app/logs/served", f"pvc://{CLAIM}/served/model"),
    ("--name", "mnist", f"pvc://{CLAIM}/models/mnist"),
])
def test_a_publish_job_writing_elsewhere_is_noticed(job, option, value, expected):
    broken = copy.deepcopy(job)
    args = container(broken["spec"]["template"]["spec"], "publish")["args"]
    args[args.index(option) + 1] = value
    try:
        found = published_uri(broken)
    except AssertionError as error:
        found = str(error)
    assert expected in found and found != STORAGE_URI


def test_the_publish_arguments_parse_with_its_own_parser(job):
    if importlib.util.find_spec("app.publish") is None:
        pytest.skip("app/publish.py is not on this branch yet (it is being added on main)")
    from app.publish import parser

    given = container(job["spec"]["template"]["spec"], "publish")["args"]
    args = parser().parse_args(given)
    assert {"run": args.run, "models": args.models, "name": args.name} == publish_arguments(given)


def test_the_publish_job_is_valid_and_locked_down(job):
    assert core_problems(job) == []
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert hardening_problems(pod, "Job.mnist-publish") == []
    assert mounts(pod, "publish") == {CLAIM_MOUNT: ("persistentVolumeClaim", CLAIM, False),
                                      "/tmp": ("emptyDir", "", False)}


JOB_BREAKAGES = {
    "misspelt container field": (lambda p: rename(p["containers"][0], "args", "arg"), "'arg'"),
    "writable root filesystem": (lambda p: p["containers"][0]["securityContext"].update(
        readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    "runs as root": (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser"),
}


@pytest.mark.parametrize("breakage", JOB_BREAKAGES)
def test_a_broken_publish_job_is_rejected(job, breakage):
    broken = copy.deepcopy(job)
    break_it, expected = JOB_BREAKAGES[breakage]
    pod = broken["spec"]["template"]["spec"]
    break_it(pod)
    found = core_problems(broken) + hardening_problems(pod, "Job.mnist-publish")
    assert any(expected in problem for problem in found), found


def test_kustomize_images_retags_the_publish_job(tmp_path):
    retagged_job = only(retagged(tmp_path, PUBLISH), "Job")
    assert [c["image"] for c in retagged_job["spec"]["template"]["spec"]["containers"]] == [RETAGGED]


# ---------------------------------------------------------------------------------------------------
# The docs say what the manifests do


def serving_section() -> str:
    text = DOCS.read_text()
    return text.split("## Serving on Kubernetes (KServe)", 1)[1].split("\n## ", 1)[0]


def test_the_docs_name_the_real_folders_objects_path_and_url(isvc, job):
    section = serving_section()
    name = isvc["metadata"]["name"]
    for needed in ("kubectl apply -k deploy/kubernetes/serving/publish",
                   "kubectl apply -k deploy/kubernetes/serving", STORAGE_URI, f"/v1/models/{name}:predict",
                   f"--models {CLAIM_MOUNT}/models", f'runtimeVersion: "{TF_SERVING_VERSION}"',
                   f"tensorflow/serving:{TF_SERVING_VERSION}"):
        assert needed in section, needed
    # Objects the commands name: the InferenceService, the Job, and what KServe makes (<name>-predictor).
    objects = {("inferenceservice", name), ("job", job["metadata"]["name"]),
               ("deployment", f"{name}-predictor")}
    for kind, named in re.findall(r"\b(inferenceservice|isvc|job|deployment)/([a-z0-9-]+)", section):
        assert ({"isvc": "inferenceservice"}.get(kind, kind), named) in objects, f"{kind}/{named}"
