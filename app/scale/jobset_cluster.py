"""python -m app.scale.jobset_cluster [app flags]: one pod of a JobSet, or of a Kubeflow Trainer TrainJob.

Builds TF_CONFIG for this pod from what JobSet gives it, then replaces itself with `python -m app [app
flags]`, as compose_cluster.py does for the compose profile and with the same function for the cluster
(cluster_spec.py). deploy/kubernetes/jobset and deploy/kubernetes/trainjob run it; docs/kubernetes.md.

JobSet (jobset.x-k8s.io/v1alpha2, v0.12) runs a replicated job R of the JobSet S as Indexed Jobs S-R-J;
pod I of job J gets the host name S-R-J-I under the subdomain, a headless Service named S unless
spec.network.subdomain says otherwise, which resolves it even before the pod is ready. A TrainJob T of
Kubeflow Trainer v2 runs as the JobSet T, its trainer pods being the replicated job `node`. Here the
cluster is one Job of WORKERS + 1 pods (replicas 1, completions = parallelism = WORKERS + 1): pod 0 is
the chief, pod I worker I - 1. What the pod reads:

- JOB_COMPLETION_INDEX, its index I: Kubernetes' Job controller sets it in every pod of an Indexed Job.
- JOBSET_NAME, REPLICATED_JOB_NAME and JOB_INDEX: the annotations jobset.sigs.k8s.io/jobset-name,
  /replicatedjob-name and /job-index that JobSet gives every pod, passed by the downward API.
- WORKERS: the workers besides the chief, written in the manifest beside completions (or numNodes).
- JOBSET_SUBDOMAIN (optional): spec.network.subdomain, where the JobSet sets one.
- CLUSTER_ADDRESSES (optional): host:port of pods 0 ... WORKERS, comma-separated, used instead of the
  names above: for a DNS of your own, or for processes on one machine (tests/integration).

It waits until every name resolves (a pod still being scheduled or pulling the image has none yet), up to
WAIT_SECONDS. Exit codes, before the trainer takes over: 2 bad settings, 1 a peer that never appeared.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping

from app.scale.cluster_spec import (
    ClusterError,
    cluster_spec,
    exec_trainer,
    resolve,
    task_of,
    tasks,
    tf_config,
    wait_for_names,
)

# Pods are scheduled one by one (no gang scheduling here), so a peer may wait minutes for a node or its image.
WAIT_SECONDS = 600.0
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # RFC 1035, as JobSet's webhook wants names


@dataclasses.dataclass(frozen=True)
class Pod:
    jobset: str
    replicated_job: str
    job_index: int
    index: int  # JOB_COMPLETION_INDEX
    workers: int
    subdomain: str
    addresses: tuple[str, ...] = ()  # CLUSTER_ADDRESSES

    def members(self) -> list[str]:
        """Every pod of the cluster, by index: its host name under the subdomain (or given address)."""
        job = f"{self.jobset}-{self.replicated_job}-{self.job_index}"
        return list(self.addresses) or [f"{job}-{i}.{self.subdomain}" for i in range(self.workers + 1)]


def _number(environ: Mapping[str, str], name: str, problem: str) -> int:
    raw = environ.get(name, "").strip()
    if not re.fullmatch(r"[0-9]+", raw):
        raise ClusterError(f"{name}={raw!r}: {problem}")
    return int(raw)


def settings(environ: Mapping[str, str]) -> Pod:
    """This pod, from the variables JobSet, the Job controller and the manifest set."""
    names = {}
    for name, annotation in (("JOBSET_NAME", "jobset-name"), ("REPLICATED_JOB_NAME", "replicatedjob-name")):
        names[name] = environ.get(name, "").strip()
        if not DNS_LABEL.fullmatch(names[name]):
            raise ClusterError(f"{name}={names[name]!r}: want the JobSet's annotation jobset.sigs.k8s.io/"
                               f"{annotation} through the downward API (deploy/kubernetes/jobset)")
    workers = _number(environ, "WORKERS", "want the number of workers besides the chief, 1 or more, with "
                                          "completions and parallelism WORKERS + 1")
    if workers < 1:
        raise ClusterError(f"WORKERS={workers}: want 1 or more (one pod alone needs no cluster)")
    index = _number(environ, "JOB_COMPLETION_INDEX", "want this pod's index, set by Kubernetes in the pods "
                                                     "of an Indexed Job (completionMode: Indexed)")
    if index > workers:
        raise ClusterError(f"JOB_COMPLETION_INDEX={index}: more pods than WORKERS + 1 ({workers + 1}): set "
                           f"completions and parallelism to WORKERS + 1")
    job_index = _number({"JOB_INDEX": environ.get("JOB_INDEX", "0")}, "JOB_INDEX", "want the Job's index")
    if job_index != 0:
        raise ClusterError(f"JOB_INDEX={job_index}: the cluster is one Job of WORKERS + 1 pods: set the "
                           "replicated job's replicas to 1")
    subdomain = environ.get("JOBSET_SUBDOMAIN", "").strip() or names["JOBSET_NAME"]
    raw = environ.get("CLUSTER_ADDRESSES", "").strip()
    addresses = tuple(a.strip() for a in raw.split(",")) if raw else ()
    if addresses and (len(addresses) != workers + 1 or not all(re.fullmatch(r"[^:\s]+:[0-9]+", a)
                                                               for a in addresses)):
        raise ClusterError(f"CLUSTER_ADDRESSES={raw!r}: want WORKERS + 1 ({workers + 1}) host:port, "
                           "comma-separated, pod 0's first")
    return Pod(names["JOBSET_NAME"], names["REPLICATED_JOB_NAME"], job_index, index, workers, subdomain,
               addresses)


def cluster(pod: Pod) -> dict[str, list[str]]:
    """TF_CONFIG's cluster: pod 0 the chief, the others the workers (cluster_spec.cluster_spec)."""
    return cluster_spec(pod.members())


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None, *,
         resolve: Callable[[str], Iterable[str]] = resolve, wait_seconds: float = WAIT_SECONDS,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         execve: Callable[[str, list[str], dict], object] = os.execve) -> int:
    """Build TF_CONFIG, then exec python -m app; the keywords are stand-ins for the tests."""
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ if environ is None else environ)
    try:
        if not {"-h", "--help"} & set(args):
            pod = settings(env)
            spec = cluster(pod)
            hosts = [host for _, _, host in tasks(spec)]
            _, missing = wait_for_names(hosts, resolve, wait_seconds, clock, sleep)
            if missing:
                raise ClusterError(f"{', '.join(missing)} did not resolve within {wait_seconds:.0f} s: the "
                                   f"JobSet's pods were not all scheduled, or its DNS names are off "
                                   f"(spec.network.enableDNSHostnames, JOBSET_SUBDOMAIN)", exit_code=1)
            task = task_of(pod.index)
            env["TF_CONFIG"] = tf_config(spec, task)
            print(f"jobset cluster: this is {task[0]}:{task[1]} of a chief and {pod.workers} "
                  f"worker{'s' * (pod.workers != 1)} (pod {pod.index} of {pod.jobset}-{pod.replicated_job})",
                  flush=True)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    exec_trainer(args, env, execve)
    return 0  # only reached with a stand-in for execve (the tests')


if __name__ == "__main__":
    sys.exit(main())
