"""deploy/kubernetes/jobset (a JobSet) and deploy/kubernetes/trainjob (a Kubeflow Trainer v2 TrainJob on a
TrainingRuntime), and the TFJob of deploy/kubernetes/base again, checked offline against the CRD schemas
those projects publish: no cluster, no operator, no network.

What checks what (docs/kubernetes.md#what-is-verified-here-and-what-is-not):

- Each JobSet, TrainJob, TrainingRuntime and TFJob against the openAPIV3Schema of its CRD pinned to a
  release tag, vendored in tests/data/{jobset,kubeflow-trainer,kubeflow-training-operator}/ by
  tools/vendor_crd_schema.py (JobSet v0.12.0; Trainer v2.3.0; the training operator v1.9.4), with
  jsonschema, unknown fields refused (every object schema that names its fields closed, as Kubernetes'
  structural schemas do: test_kserve.closed). Metadata against Kubernetes' ObjectMeta; the pod templates
  and the Jobs inside against Kubernetes' own JSON schemas (kubernetes-validate, strict).
- What the schemas cannot say, rewritten: JobSet's webhook (v0.12.0, pkg/webhooks/jobset_webhook.go: DNS-1035
  names, the longest Job and pod names within 63 characters), the TrainJob's CEL rules (an RFC 1035 name
  of at most 63 characters), Trainer's TrainingRuntime webhook (v2.3.0: the trainer ancestor's job has one
  replica and a container `node`) and v2.4.0's limit of 20 characters on a runtime's replicated job names
  (release notes, kubeflow/trainer#4394: its source was not at hand), Kubernetes' Job validation
  (restartPolicy Never or OnFailure).
- This project's rules: the launcher and its arguments, WORKERS beside the pod count, the downward API
  from JobSet's annotations, restarts of the whole set, the same pod template as the TFJob's; and
  TF_CONFIG built from each pod's environment (as JobSet, the Job controller and Trainer would give it)
  compared with the expected cluster spec.
- The NetworkPolicies: port 2222 only between one JobSet's own pods (by jobset.sigs.k8s.io/jobset-name),
  with the semantics rewritten in tests/unit/test_kubernetes.py, which also holds both folders to the
  restricted Pod Security Standard, no service-account token, a default deny, the claim and the image
  (ENTRY_POINTS).

Every check is shown to reject a broken copy. What only a cluster shows is listed in docs/kubernetes.md.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest
from helpers import ROOT
from test_kserve import closed
from test_kubernetes import (
    ANCESTOR,
    DEPLOY,
    DNS,
    ELSEWHERE,
    INTERNET,
    PRIVATE,
    STRANGER,
    allowed,
    by_where,
    container,
    core_problems,
    hardening_problems,
    jobset_pods,
    kustomize,
    mounts,
    only,
    pod_template_problems,
    policies_of,
    rename,
    replica_pod_specs,
    trainjob_jobset,
    trial_job,
)

from app.scale import cluster_spec, distribution, jobset_cluster

DATA = ROOT / "tests" / "data"
DOCS = ROOT / "docs" / "kubernetes.md"
JOBSET, TRAINJOB = DEPLOY / "jobset", DEPLOY / "trainjob"
LAUNCHER = ["python3", "-m", "app.scale.jobset_cluster"]
NODE = "node"  # Trainer's name for the trainer's replicated job and container (pkg/constants, v2.3.0)
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
RUNTIME_JOB_NAME_LIMIT = 20  # Trainer v2.4.0: a runtime's replicated job names (kubeflow/trainer#4394)


# ---------------------------------------------------------------------------------------------------
# The pinned schemas, made strict

# (apiVersion, kind) -> the vendored schema, its project's tag and its README.
SCHEMAS = {
    ("jobset.x-k8s.io/v1alpha2", "JobSet"): ("jobset/jobset-v1alpha2.schema.json", "v0.12.0"),
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): (
        "kubeflow-trainer/trainjob-v1alpha1.schema.json", "v2.3.0"),
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"): (
        "kubeflow-trainer/trainingruntime-v1alpha1.schema.json", "v2.3.0"),
    ("kubeflow.org/v1", "TFJob"): ("kubeflow-training-operator/tfjob-v1.schema.json", "v1.9.4"),
}
COMMITS = {"v0.12.0": "f22e565ac3cc3265c7c45ef67ecffdc689af5d77",  # github.com/kubernetes-sigs/jobset
           "v2.3.0": "658725bdae5c7e3a0854d93ac6ff492e109a22ab",  # github.com/kubeflow/trainer
           "v1.9.4": "4445c12aa62e4345b0c2c6ac9b215a70eca46ed7"}  # the same, then named training-operator


@functools.cache
def vendored(path: str) -> dict:
    return json.loads((DATA / path).read_text())


@functools.cache
def validator(path: str) -> jsonschema.Draft202012Validator:
    schema = copy.deepcopy(vendored(path))
    closed(schema)
    for definition in schema["$defs"].values():
        closed(definition)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_problems(obj: dict) -> list[str]:
    """`obj` against its CRD's pinned schema, strictly; its metadata against Kubernetes' ObjectMeta."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in SCHEMAS:
        return [f"{key}: no pinned schema (one of {sorted(SCHEMAS)})"]
    path, tag = SCHEMAS[key]
    found = [f"{key[1]}{''.join(f'.{p}' for p in error.absolute_path)}: {error.message} ({tag} CRD)"
             for error in validator(path).iter_errors(obj)]
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):  # the CRDs say `type: object` only: Kubernetes checks ObjectMeta itself
        wrapped = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
        found += [p.replace("ConfigMap/metadata.", f"{key[1]}.", 1)
                  for p in core_problems(wrapped, "ConfigMap/metadata")]
    return found


# ---------------------------------------------------------------------------------------------------
# What the schemas cannot say, rewritten


def name_problems(name: str, where: str, limit: int = 63) -> list[str]:
    if DNS_1035.fullmatch(name or "") and len(name) <= limit:
        return []
    return [f"{where} {name!r}: not an RFC 1035 label (lowercase letters, digits and '-', starting with a "
            f"letter) of at most {limit} characters"]


def jobset_spec_problems(name: str, spec: dict, where: str) -> list[str]:
    """JobSet v0.12.0's webhook (ValidateCreate) on the names, and Kubernetes' own schemas and Job rules on
    each replicated job's Job template (with its pod template)."""
    found = name_problems(name, f"{where} name")
    if (spec.get("network") or {}).get("subdomain"):
        found += name_problems(spec["network"]["subdomain"], f"{where}.spec.network.subdomain")
    for rjob in spec.get("replicatedJobs") or []:
        at = f"{where}.spec.replicatedJobs[{rjob.get('name')}]"
        found += name_problems(rjob.get("name"), f"{at} name")
        job = (rjob.get("template") or {}).get("spec") or {}
        longest_job = f"{name}-{rjob.get('name')}-{rjob.get('replicas', 1) - 1}"
        if len(longest_job) > 63:
            found.append(f"{at}: job names generated for this JobSet will exceed 63 characters "
                         f"({longest_job})")
        if job.get("completionMode", "Indexed") == "Indexed" and job.get("completions"):
            longest_pod = f"{longest_job}-{job['completions'] - 1}-abcde"  # the Job's 5 random characters
            if len(longest_pod) > 63:
                found.append(f"{at}: pod names generated for this JobSet will exceed 63 characters "
                             f"({longest_pod})")
        wrapped = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "replicated-job"},
                   "spec": job}
        found += [p.replace("Job/replicated-job.", f"{at}.template.", 1)
                  for p in core_problems(wrapped, "Job/replicated-job")]
        pod_spec = ((job.get("template") or {}).get("spec")) or {}
        if pod_spec.get("restartPolicy", "OnFailure") not in ("Never", "OnFailure"):  # JobSet's default
            found.append(f"{at}: a Job's pods restart Never or OnFailure, not {pod_spec['restartPolicy']!r}")
        found += pod_template_problems(job.get("template"), f"{at}.template.spec.template")
    return found


def runtime_problems(runtime: dict) -> list[str]:
    """Trainer's TrainingRuntime webhook (v2.3.0, validateReplicatedJobs) and v2.4.0's name limit; this
    project's runtime sets no framework policy."""
    found = []
    spec = runtime.get("spec") or {}
    for rjob in ((spec.get("template") or {}).get("spec") or {}).get("replicatedJobs") or []:
        at = f"TrainingRuntime.spec.template.spec.replicatedJobs[{rjob.get('name')}]"
        if len(rjob.get("name") or "") > RUNTIME_JOB_NAME_LIMIT:
            found.append(f"{at}: a replicated job name of at most {RUNTIME_JOB_NAME_LIMIT} characters "
                         "(Trainer v2.4)")
        template = rjob.get("template") or {}
        ancestor = ((template.get("metadata") or {}).get("labels") or {}).get(ANCESTOR)
        if ancestor in ("trainer", "dataset-initializer", "model-initializer"):
            if rjob.get("replicas", 1) != 1:
                found.append(f"{at}.replicas: always must be 1")
            want = NODE if ancestor == "trainer" else ancestor
            names = [c.get("name") for c in (((template.get("spec") or {}).get("template") or {})
                                             .get("spec") or {}).get("containers") or []]
            if want not in names:
                found.append(f"{at}: must contain the required container for the ancestor: {ancestor} "
                             f"(named {want}, found {names})")
    frameworks = set(spec.get("mlPolicy") or {}) - {"numNodes"}
    if frameworks:
        found.append(f"TrainingRuntime.spec.mlPolicy: no framework policy here ({sorted(frameworks)}): "
                     "TensorFlow has none in Trainer, the pods build TF_CONFIG")
    return found


def problems(obj: dict, objects: list[dict] = ()) -> list[str]:
    """Everything checked on one object of the training folders; a TrainJob with its runtime in `objects`.
    The rules beyond the schema only for an object the schema admits, as the API server validates the
    schema before the validating webhooks see an object."""
    found = schema_problems(obj)
    if found:
        return found
    kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name") or ""
    if kind == "JobSet":
        found += jobset_spec_problems(name, obj.get("spec") or {}, "JobSet")
    elif kind == "TrainingRuntime":
        found += runtime_problems(obj)
    elif kind == "TrainJob":
        found += name_problems(name, "TrainJob metadata.name")  # the CRD's two CEL rules
        ref = (obj.get("spec") or {}).get("runtimeRef") or {}
        if (ref.get("apiGroup"), ref.get("kind")) != ("trainer.kubeflow.org", "TrainingRuntime"):
            found.append(f"TrainJob.spec.runtimeRef: want this namespace's TrainingRuntime, found "
                         f"{ref.get('apiGroup')}/{ref.get('kind', 'ClusterTrainingRuntime (the default)')}")
        elif not found:  # the JobSet Trainer makes of it, as JobSet's webhook sees it
            jobset = trainjob_jobset(obj, list(objects))
            found += jobset_spec_problems(name, jobset["spec"], "TrainJob's JobSet")
    return found


# ---------------------------------------------------------------------------------------------------
# The files


@pytest.fixture(scope="module")
def renders() -> dict[str, list[dict]]:
    return {"jobset": kustomize(JOBSET), "trainjob": kustomize(TRAINJOB)}


def trainer_kinds(objects: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objects if o["kind"] not in ("Deployment", "Service", "NetworkPolicy"))


def test_kustomize_renders_the_jobs_their_policies_and_tensorboard(renders):
    for folder, kinds in (("jobset", ["JobSet"]), ("trainjob", ["TrainJob", "TrainingRuntime"])):
        objects = renders[folder]
        assert trainer_kinds(objects) == kinds, folder
        assert sorted(p["metadata"]["name"] for p in policies_of(objects)) == sorted(
            [f"mnist-{folder}-deny-all", f"mnist-{folder}-download", f"mnist-{folder}-peers",
             "mnist-tensorboard-deny-all"]), folder
        assert {(o["kind"], o["metadata"]["name"]) for o in objects} >= {
            ("Deployment", "mnist-tensorboard"), ("Service", "mnist-tensorboard")}


def test_every_job_is_valid_against_its_pinned_schema(renders):
    for objects in renders.values():
        for obj in objects:
            if (obj["apiVersion"], obj["kind"]) in SCHEMAS:
                assert problems(obj, objects) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_tfjobs_are_valid_against_the_operators_crd_too():
    """The TFJob of deploy/kubernetes (the operator path) and a Katib trial's TFJob, against the TFJob CRD
    of the training operator v1.9.4 (tests/unit/test_kubernetes.py checks them with its Python models)."""
    tfjob = only(kustomize(DEPLOY), "TFJob")
    trial = trial_job(only(kustomize(DEPLOY / "sweep"), "Experiment"))
    for job in (tfjob, trial):
        assert schema_problems(job) == [], job["metadata"]["name"]


@pytest.mark.parametrize("key", SCHEMAS)
def test_each_vendored_schema_is_the_projects_crd_at_the_pinned_tag(key):
    path, tag = SCHEMAS[key]
    schema = vendored(path)
    source = schema["x-source"]
    assert source["tag"] == tag and source["commit"] == COMMITS[tag] and source["license"] == "Apache-2.0"
    assert source["path"].endswith(".yaml") and re.fullmatch(r"[0-9a-f]{64}", source["sha256"])
    readme = (DATA / path).parent.joinpath("README.md").read_text()
    for fact in (tag, source["commit"], source["path"], source["sha256"], "Apache-2.0",
                 "tools/vendor_crd_schema.py"):
        assert fact in readme, fact
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec"}  # status dropped
    assert (DATA / path).stat().st_size < 100_000  # a CRD is 0.5-1 MB: only what validation needs is kept


MIRRORS = {"https://github.com/kubernetes-sigs/jobset": Path("/work/.mirror/kubernetes-sigs+jobset/repo"),
           "https://github.com/kubeflow/trainer": Path("/work/.mirror/kubeflow+trainer/repo")}


@pytest.mark.parametrize("name", ["jobset", "trainjob", "trainingruntime", "tfjob"])
def test_the_tool_makes_exactly_the_vendored_schema_from_the_tag(name, tmp_path):
    """Where a clone of the project is at hand (the machine these files were made on), the tool makes
    from the pinned tag exactly the committed file."""
    from tools import vendor_crd_schema

    crd = vendor_crd_schema.CRDS[name]
    mirror = MIRRORS[crd.repository]
    if not mirror.is_dir():
        pytest.skip(f"no clone of {crd.repository} at {mirror}")
    out = tmp_path / "schema.json"
    assert vendor_crd_schema.main([name, str(mirror), "--out", str(out)]) == 0
    assert out.read_text() == (DATA / crd.out).read_text()


def test_the_closed_schemas_leave_open_what_the_crds_leave_open(renders):
    """Labels and annotations stay maps, and the JobSet's Job template metadata stays open."""
    jobset = copy.deepcopy(only(renders["jobset"], "JobSet"))
    jobset["metadata"]["annotations"] = {"example.com/note": "x"}
    jobset["spec"]["replicatedJobs"][0]["template"]["metadata"] = {"labels": {"team": "a"}}
    assert problems(jobset) == []


# ---------------------------------------------------------------------------------------------------
# Broken copies of the real manifests are rejected


def rjob(obj: dict) -> dict:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "TrainingRuntime" else obj["spec"]
    return spec["replicatedJobs"][0]


def node(obj: dict) -> dict:
    return rjob(obj)["template"]["spec"]["template"]["spec"]["containers"][0]


BREAKAGES = {
    "JobSet: misspelt replicatedJobs": (
        "JobSet", lambda o: rename(o["spec"], "replicatedJobs", "replicatedjobs"), "'replicatedjobs'"),
    "JobSet: misspelt maxRestarts": ("JobSet", lambda o: rename(o["spec"]["failurePolicy"], "maxRestarts",
                                                                "maxRestart"), "'maxRestart'"),
    "JobSet: an unknown restart strategy": (
        "JobSet", lambda o: o["spec"]["failurePolicy"].update(restartStrategy="Blocking"), "'Blocking'"),
    "JobSet: completions as text": ("JobSet", lambda o: rjob(o)["template"]["spec"].update(completions="two"),
                                    "'two'"),
    "JobSet: misspelt container field": ("JobSet", lambda o: rename(node(o)["securityContext"],
                                                                    "readOnlyRootFilesystem",
                                                                    "readOnlyRootFileSystem"),
                                         "'readOnlyRootFileSystem'"),
    "JobSet: misspelt fieldRef": (
        "JobSet", lambda o: rename(node(o)["env"][1]["valueFrom"], "fieldRef", "fieldref"), "'fieldref'"),
    "JobSet: pods restarted Always": (
        "JobSet", lambda o: rjob(o)["template"]["spec"]["template"]["spec"].update(restartPolicy="Always"),
        "not 'Always'"),
    "JobSet: uppercase name": ("JobSet", lambda o: o["metadata"].update(name="MNIST-jobset"), "RFC 1035"),
    "JobSet: pod names past 63 characters": (
        "JobSet", lambda o: o["metadata"].update(name="mnist-jobset-" + "x" * 38), "pod names generated"),
    "JobSet: replicated job with an underscore": (
        "JobSet", lambda o: rjob(o).update(name="no_de"), "'no_de'"),
    "JobSet: a status": ("JobSet", lambda o: o.update(status={"restarts": 0}), "'status'"),
    "TrainingRuntime: misspelt numNodes": (
        "TrainingRuntime", lambda o: rename(o["spec"]["mlPolicy"], "numNodes", "numNode"), "'numNode'"),
    "TrainingRuntime: two replicas of the trainer": ("TrainingRuntime", lambda o: rjob(o).update(replicas=2),
                                                     "always must be 1"),
    "TrainingRuntime: the container not named node": (
        "TrainingRuntime", lambda o: node(o).update(name="trainer"), "required container for the ancestor"),
    "TrainingRuntime: a replicated job name of 21 characters": (
        "TrainingRuntime", lambda o: rjob(o).update(name="n" * 21), "at most 20 characters"),
    "TrainingRuntime: a framework policy": (
        "TrainingRuntime", lambda o: o["spec"]["mlPolicy"].update(torch={}), "no framework policy"),
    "TrainingRuntime: misspelt pod field": (
        "TrainingRuntime", lambda o: rename(rjob(o)["template"]["spec"]["template"]["spec"],
                                            "securityContext", "securitycontext"), "'securitycontext'"),
    "TrainJob: misspelt runtimeRef": ("TrainJob", lambda o: rename(o["spec"], "runtimeRef", "runtimeref"),
                                      "'runtimeref'"),
    "TrainJob: numNodes as text": (
        "TrainJob", lambda o: o["spec"]["trainer"].update(numNodes="two"), "'two'"),
    "TrainJob: a cluster runtime by default": ("TrainJob", lambda o: o["spec"]["runtimeRef"].pop("kind"),
                                               "ClusterTrainingRuntime"),
    "TrainJob: underscore in its name": ("TrainJob", lambda o: o["metadata"].update(name="mnist_trainjob"),
                                         "RFC 1035"),
    "TrainJob: a name of 64 characters": (
        "TrainJob", lambda o: o["metadata"].update(name="m" * 64), "RFC 1035"),
    "TrainJob: pod names past 63 characters": (
        "TrainJob", lambda o: o["metadata"].update(name="mnist-trainjob-" + "x" * 38), "pod names generated"),
    "TrainJob: misspelt env field": (
        "TrainJob", lambda o: rename(o["spec"]["trainer"]["env"][0], "value", "valeu"), "'valeu'"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_job_is_rejected(renders, breakage):
    kind, break_it, expected = BREAKAGES[breakage]
    objects = copy.deepcopy(renders["jobset" if kind == "JobSet" else "trainjob"])
    obj = only(objects, kind)
    break_it(obj)
    trainjob = [o for o in objects if o["kind"] == "TrainJob"]
    found = problems(obj, objects) + (problems(trainjob[0], objects) if kind == "TrainingRuntime" else [])
    assert any(expected in problem for problem in found), found


TFJOB_BREAKAGES = {
    "misspelt tfReplicaSpecs": (lambda j: rename(j["spec"], "tfReplicaSpecs", "tfReplicaSpec"),
                                "'tfReplicaSpec'"),
    "replicas as text": (lambda j: j["spec"]["tfReplicaSpecs"]["Worker"].update(replicas="two"), "'two'"),
    "misspelt cleanPodPolicy": (lambda j: rename(j["spec"]["runPolicy"], "cleanPodPolicy", "cleanPodpolicy"),
                                "'cleanPodpolicy'"),
    "backoffLimit as text": (lambda j: j["spec"]["runPolicy"].update(backoffLimit="ten"), "'ten'"),
    "misspelt pod field": (lambda j: rename(j["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"],
                                            "volumes", "volume"), "'volume'"),
}


@pytest.mark.parametrize("breakage", TFJOB_BREAKAGES)
def test_a_broken_tfjob_is_rejected_by_the_crd_schema(breakage):
    job = copy.deepcopy(only(kustomize(DEPLOY), "TFJob"))
    break_it, expected = TFJOB_BREAKAGES[breakage]
    break_it(job)
    found = schema_problems(job)
    assert any(expected in problem for problem in found), found


def test_the_name_limit_the_docs_give(renders):
    """docs/kubernetes.md: with the replicated job `node`, a JobSet (or TrainJob) name of up to 47
    characters leaves room for 99 workers; 48 does not."""
    spec = copy.deepcopy(only(renders["jobset"], "JobSet")["spec"])
    spec["replicatedJobs"][0]["template"]["spec"].update(completions=100, parallelism=100)
    assert jobset_spec_problems("m" * 47, spec, "JobSet") == []
    assert any("pod names generated" in p for p in jobset_spec_problems("m" * 48, spec, "JobSet"))


def test_an_object_without_a_pinned_schema_is_not_waved_through():
    assert schema_problems({"apiVersion": "jobset.x-k8s.io/v1alpha1", "kind": "JobSet"})[0].endswith(
        "no pinned schema (one of " + str(sorted(SCHEMAS)) + ")")


# ---------------------------------------------------------------------------------------------------
# This project's rules


class Calls(list):
    """A stand-in for os.execve that records its calls."""

    def __call__(self, *call):
        self.append(call)


def jobset_of(renders, folder: str) -> dict:
    """The JobSet that runs: the folder's own, or the one Trainer makes of the TrainJob."""
    objects = renders[folder]
    if folder == "jobset":
        return only(objects, "JobSet")
    return trainjob_jobset(only(objects, "TrainJob"), objects)


def environment(container_spec: dict, labels: dict) -> dict[str, str]:
    """The container's environment in pod `labels`: its values, the downward API's annotations (JobSet
    gives every pod the same keys as annotations and as labels), JOB_COMPLETION_INDEX from the Job."""
    env = {"JOB_COMPLETION_INDEX": labels["batch.kubernetes.io/job-completion-index"]}
    for var in container_spec.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            key = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path).group(1)
            env[var["name"]] = labels[key]
    return env


@pytest.mark.parametrize("folder", ["jobset", "trainjob"])
def test_the_pods_are_one_indexed_job_running_the_launcher_on_the_same_run(renders, folder):
    jobset = jobset_of(renders, folder)
    name = jobset["metadata"]["name"]
    assert name == f"mnist-{folder}"
    assert jobset["spec"]["failurePolicy"]["maxRestarts"] >= 1  # JobSet restarts the whole set
    assert jobset["spec"].get("network", {}).get("enableDNSHostnames", True)
    assert jobset["spec"]["network"].get("publishNotReadyAddresses", True)  # names before readiness
    assert "subdomain" not in jobset["spec"]["network"]  # the headless Service is named as the JobSet
    [replicated] = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert (replicated["name"], replicated.get("replicas", 1)) == (NODE, 1)
    assert job["completionMode"] == "Indexed" and job["backoffLimit"] == 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # the set restarts, not one container
    trainer = container(job["template"]["spec"], NODE)
    assert trainer["command"] == LAUNCHER
    assert trainer["args"] == ["--strategy", "auto", "--run-name", name, "--resume", "auto"]
    env = {var["name"]: var for var in trainer["env"]}
    assert int(env["WORKERS"]["value"]) + 1 == job["completions"] == job["parallelism"]
    for var, annotation in (("JOBSET_NAME", "jobset-name"), ("REPLICATED_JOB_NAME", "replicatedjob-name"),
                            ("JOB_INDEX", "job-index")):
        assert env[var]["valueFrom"] == {"fieldRef": {
            "fieldPath": f"metadata.annotations['jobset.sigs.k8s.io/{annotation}']"}}, var
    assert {p["containerPort"] for p in trainer["ports"]} == {cluster_spec.PORT}
    assert hardening_problems(job["template"]["spec"], folder) == []


def test_the_trainjob_sets_workers_beside_numnodes_and_the_runtime_agrees(renders):
    objects = renders["trainjob"]
    trainjob, runtime = only(objects, "TrainJob"), only(objects, "TrainingRuntime")
    trainer = trainjob["spec"]["trainer"]
    assert trainer["env"] == [{"name": "WORKERS", "value": str(trainer["numNodes"] - 1)}]
    assert runtime["spec"]["mlPolicy"] == {"numNodes": trainer["numNodes"]}  # and no framework
    assert trainjob["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"]
    assert rjob(runtime)["template"]["metadata"]["labels"] == {ANCESTOR: "trainer"}


def test_the_jobset_and_the_trainjob_run_the_same_pod_and_the_tfjobs_but_for_the_launcher(renders):
    """One pod template: the JobSet's, the one Trainer makes of the TrainJob (but for the run's name), and
    the TFJob's (but for the container's name, the launcher and its environment, the port's name)."""
    def pod(folder):
        [replicated] = jobset_of(renders, folder)["spec"]["replicatedJobs"]
        return copy.deepcopy(replicated["template"]["spec"]["template"])

    jobset, trainjob = pod("jobset"), pod("trainjob")
    for each in (jobset, trainjob):
        each["spec"]["containers"][0]["args"] = [a.replace("jobset", "x").replace("trainjob", "x")
                                                 for a in each["spec"]["containers"][0]["args"]]
        each["spec"]["containers"][0]["env"].sort(key=lambda var: var["name"])
    assert jobset == trainjob
    tfjob = copy.deepcopy(only(kustomize(DEPLOY), "TFJob")["spec"]["tfReplicaSpecs"]["Chief"]["template"])
    for each in (jobset, tfjob):
        c = each["spec"]["containers"][0]
        for key in ("name", "command", "args", "env", "ports"):
            c.pop(key, None)
        each["spec"].pop("restartPolicy", None)  # the TFJob's is the replica's (OnFailure)
    assert jobset == tfjob
    assert mounts(pod("jobset")["spec"], NODE) == mounts(replica_pod_specs(only(kustomize(DEPLOY), "TFJob"))
                                                         ["Chief"], "tensorflow")


# What each pod's TF_CONFIG must say: pod 0 the chief, pod 1 worker 0, by their JobSet host names.
EXPECTED = {folder: {"chief": [f"mnist-{folder}-node-0-0.mnist-{folder}:2222"],
                     "worker": [f"mnist-{folder}-node-0-1.mnist-{folder}:2222"]}
            for folder in ("jobset", "trainjob")}


@pytest.mark.parametrize("folder", ["jobset", "trainjob"])
def test_tf_config_built_from_each_pods_environment_is_the_expected_cluster(renders, folder, monkeypatch):
    """Each pod's environment as JobSet, the Job controller (and Trainer) give it, handed to the launcher:
    the cluster spec above, and each pod its own task; the host names are the pods' (a pod of an Indexed
    Job with a subdomain is named <job name>-<index> under it, and the Service is the JobSet's name)."""
    jobset = jobset_of(renders, folder)
    found = jobset_pods(jobset, folder)
    assert len(found) == 2
    for i, each in enumerate(found):
        env = environment(container(each.spec, NODE), each.labels)
        pod = jobset_cluster.settings(env)
        spec = jobset_cluster.cluster(pod)
        assert spec == EXPECTED[folder]
        job_name = each.labels["batch.kubernetes.io/job-name"]
        assert pod.members()[i] == f"{job_name}-{i}.{jobset['metadata']['name']}"
        calls = Calls()
        code = jobset_cluster.main(["--run-name", "r"], env, resolve=lambda host: ["10.0.0.1"], execve=calls)
        [(path, argv, child)] = calls
        assert code == 0 and argv == [sys.executable, "-m", "app", "--run-name", "r"]
        assert json.loads(child["TF_CONFIG"]) == {"cluster": EXPECTED[folder],
                                                  "task": {"type": ("chief", "worker")[i], "index": 0}}
        monkeypatch.setenv("TF_CONFIG", child["TF_CONFIG"])
        assert distribution.cluster() == (2, ("chief:0", "worker:0")[i])  # --strategy auto: multi-worker


# ---------------------------------------------------------------------------------------------------
# The launcher's own rules (python -m app.scale.jobset_cluster)

POD_ENV = {"JOBSET_NAME": "mnist-jobset", "REPLICATED_JOB_NAME": "node", "JOB_INDEX": "0",
           "JOB_COMPLETION_INDEX": "2", "WORKERS": "3"}


@pytest.mark.parametrize("change, problem", [
    ({"JOBSET_NAME": ""}, "JOBSET_NAME='': want the JobSet's annotation jobset.sigs.k8s.io/jobset-name"),
    ({"REPLICATED_JOB_NAME": "Node"}, "REPLICATED_JOB_NAME='Node': want the JobSet's annotation "
                                      "jobset.sigs.k8s.io/replicatedjob-name"),
    ({"WORKERS": "0"}, "WORKERS=0: want 1 or more"),
    ({"WORKERS": "two"}, "WORKERS='two': want the number of workers besides the chief"),
    ({"JOB_COMPLETION_INDEX": ""}, "JOB_COMPLETION_INDEX='': want this pod's index"),
    ({"JOB_COMPLETION_INDEX": "4"}, "JOB_COMPLETION_INDEX=4: more pods than WORKERS + 1 (4)"),
    ({"JOB_INDEX": "1"}, "JOB_INDEX=1: the cluster is one Job of WORKERS + 1 pods"),
    ({"CLUSTER_ADDRESSES": "127.0.0.1:1,127.0.0.1:2"}, "CLUSTER_ADDRESSES='127.0.0.1:1,127.0.0.1:2': want "
                                                       "WORKERS + 1 (4) host:port"),
])
def test_bad_pod_settings_are_refused_in_one_line(change, problem, capsys):
    calls = []
    code = jobset_cluster.main([], {**POD_ENV, **change}, resolve=lambda h: ["10.0.0.1"],
                               execve=lambda *call: calls.append(call))
    assert (code, calls) == (2, [])
    err = capsys.readouterr().err
    assert err.startswith(f"error: {problem}") and err.count("\n") == 1, err


def test_the_subdomain_and_the_addresses_can_be_given():
    pod = jobset_cluster.settings({**POD_ENV, "JOBSET_SUBDOMAIN": "trainers"})
    assert jobset_cluster.cluster(pod)["worker"][0] == "mnist-jobset-node-0-1.trainers:2222"
    given = "127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003"
    pod = jobset_cluster.settings({**POD_ENV, "CLUSTER_ADDRESSES": given})
    assert jobset_cluster.cluster(pod) == {"chief": ["127.0.0.1:5000"],
                                           "worker": ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]}
    assert cluster_spec.task_of(pod.index) == ("worker", 1)


def test_it_waits_for_every_name_and_gives_up_in_one_line(capsys):
    clock = [0.0]
    late = {"mnist-jobset-node-0-3.mnist-jobset": 3}

    def resolve(host):
        if late.get(host, 0) > 0:
            late[host] -= 1
            raise OSError("Name or service not known")
        return ["10.0.0.9"]

    calls = []
    kwargs = dict(clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                  execve=lambda *call: calls.append(call))
    assert jobset_cluster.main([], POD_ENV, resolve=resolve, **kwargs) == 0 and len(calls) == 1
    assert clock[0] == 3 and "this is worker:1 of a chief and 3 workers" in capsys.readouterr().out

    def never(host):
        raise OSError("Name or service not known")

    assert jobset_cluster.main([], POD_ENV, resolve=never, wait_seconds=30, **kwargs) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: mnist-jobset-node-0-0.mnist-jobset, mnist-jobset-node-0-1.mnist-jobset, ") \
        and "did not resolve within 30 s" in err and err.count("\n") == 1


def test_help_needs_no_cluster():
    calls = []
    assert jobset_cluster.main(["--help"], {}, execve=lambda *call: calls.append(call)) == 0
    assert calls[0][1][-1] == "--help" and "TF_CONFIG" not in calls[0][2]


# ---------------------------------------------------------------------------------------------------
# NetworkPolicies: port 2222 only between one JobSet's own pods


@pytest.mark.parametrize("folder", ["jobset", "trainjob"])
def test_the_training_port_is_open_only_between_one_jobsets_own_pods(renders, folder):
    everything = [obj for objects in (*renders.values(), kustomize(DEPLOY)) for obj in objects]
    policies = policies_of(everything)
    found = by_where(everything)
    kind = "JobSet" if folder == "jobset" else "TrainJob"
    chief, worker = (found[f"{kind}/mnist-{folder}.node-0-{i}"] for i in (0, 1))
    assert allowed(policies, chief, worker, 2222) and allowed(policies, worker, chief, 2222)
    # Another JobSet (or TrainJob) from the same file under another name is another job.
    other = copy.deepcopy(only(renders[folder], kind))
    other["metadata"]["name"] = f"mnist-{folder}-2"
    stranger = by_where([other, *renders[folder]])[f"{kind}/mnist-{folder}-2.node-0-0"]
    other_kind = {"jobset": "TrainJob/mnist-trainjob", "trainjob": "JobSet/mnist-jobset"}[folder]
    others = [stranger, found["TFJob/mnist-tfjob.Chief[0]"], found["Deployment/mnist-tensorboard"], STRANGER,
              ELSEWHERE, found[f"{other_kind}.node-0-1"]]
    for source in others:
        assert not allowed(policies, source, worker, 2222), source
        assert not allowed(policies, chief, source, 2222), source
    assert allowed(policies, chief, DNS, 53, "UDP") and allowed(policies, chief, INTERNET, 443)
    assert not allowed(policies, chief, PRIVATE, 443) and not allowed(policies, chief, INTERNET, 80)


# ---------------------------------------------------------------------------------------------------
# The docs name what exists


def test_the_docs_name_the_folders_objects_and_launcher(renders):
    text = DOCS.read_text()
    for folder in ("deploy/kubernetes/jobset", "deploy/kubernetes/trainjob"):
        assert f"kubectl apply -k {folder}" in text, folder
    names = {(obj["kind"], obj["metadata"]["name"]) for objects in renders.values() for obj in objects}
    for kind, name in re.findall(r"\b(jobset|trainjob)/(mnist-[a-z0-9-]+)", text):
        assert ({"jobset": "JobSet", "trainjob": "TrainJob"}[kind], name) in names, name
    assert "app/scale/jobset_cluster.py" in text and "app/scale/cluster_spec.py" in text
