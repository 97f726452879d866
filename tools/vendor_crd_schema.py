"""Vendor the CRD schemas that tests/unit/test_kubernetes_jobs.py checks the training manifests against.

    python -m tools.vendor_crd_schema NAME MIRROR [--tag TAG]

NAME is one of CRDS (jobset, trainjob, trainingruntime, tfjob); MIRROR a git clone (bare is fine) of its
repository (github.com/kubernetes-sigs/jobset, or github.com/kubeflow/trainer, which was the training
operator's repository before). The CRD at TAG becomes tests/data/<project>/<kind>-<version>.schema.json:
the openAPIV3Schema of that version, made compact exactly as tools/vendor_kserve_schema.py makes KServe's
(its functions, shared): every `description` dropped, `status` dropped, every repeated subschema written
once under `$defs`, checked to expand back to the schema before it is written. Types, enums, patterns,
required fields, the x-kubernetes-* markers and the CEL rules (`x-kubernetes-validations`) stay as the
project publishes them. The source (repository, tag, commit, path, SHA-256, license) goes into the file's
`x-source`; the README beside it repeats it. Reads only the mirror; imports nothing of app/.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tools.vendor_kserve_schema import expanded, git, shared, without_descriptions

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


@dataclasses.dataclass(frozen=True)
class Crd:
    repository: str
    tag: str
    path: str  # of the CRD in the repository at that tag
    version: str  # the API version whose schema is kept
    out: str  # under tests/data

    @property
    def kind(self) -> str:
        return self.out.rsplit("/", 1)[-1].split("-")[0]


TRAINER = "https://github.com/kubeflow/trainer"  # also the training operator's (v1), renamed
CRDS = {
    "jobset": Crd("https://github.com/kubernetes-sigs/jobset", "v0.12.0",
                  "config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml", "v1alpha2",
                  "jobset/jobset-v1alpha2.schema.json"),
    "trainjob": Crd(TRAINER, "v2.3.0", "manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml", "v1alpha1",
                    "kubeflow-trainer/trainjob-v1alpha1.schema.json"),
    "trainingruntime": Crd(TRAINER, "v2.3.0",
                           "manifests/base/crds/trainer.kubeflow.org_trainingruntimes.yaml", "v1alpha1",
                           "kubeflow-trainer/trainingruntime-v1alpha1.schema.json"),
    "tfjob": Crd(TRAINER, "v1.9.4", "manifests/base/crds/kubeflow.org_tfjobs.yaml", "v1",
                 "kubeflow-training-operator/tfjob-v1.schema.json"),
}


def vendored(crd_text: str, version: str, source: dict) -> dict:
    crd = yaml.safe_load(crd_text)
    [found] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = without_descriptions(found["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)
    compact = shared(schema)
    defs = compact.pop("$defs")
    if expanded(compact, defs) != schema:  # the $refs must stand for exactly what they replaced
        raise AssertionError("the shared subschemas do not expand back to the schema")
    kind = crd["spec"]["names"]["kind"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": f"{kind} {version} openAPIV3Schema of {source.get('repository')} at "
                        f"{source.get('tag')}, descriptions and status dropped, repeated subschemas "
                        "under $defs: tools/vendor_crd_schema.py",
            "x-source": source, **compact, "$defs": defs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.vendor_crd_schema", description=__doc__.split("\n")[0])
    p.add_argument("name", choices=sorted(CRDS))
    p.add_argument("mirror", help="a git clone of the CRD's repository (bare is fine)")
    p.add_argument("--tag", help="default: the pinned one (tools/vendor_crd_schema.py CRDS)")
    p.add_argument("--out", type=Path, help="default: tests/data/<project>/<kind>-<version>.schema.json")
    args = p.parse_args(argv)
    crd = CRDS[args.name]
    tag, out = args.tag or crd.tag, args.out or DATA / crd.out
    try:
        commit = git(args.mirror, "rev-parse", f"{tag}^{{commit}}").strip()
        text = git(args.mirror, "show", f"{commit}:{crd.path}")
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        why = getattr(error, "stderr", "") or error
        print(f"error: {args.mirror}: no {crd.path} at {tag}: {why}".strip(), file=sys.stderr)
        return 2
    source = {"repository": crd.repository, "tag": tag, "commit": commit, "path": crd.path,
              "sha256": hashlib.sha256(text.encode()).hexdigest(), "license": "Apache-2.0"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(vendored(text, crd.version, source), separators=(",", ":")) + "\n")
    print(f"{out}: {out.stat().st_size:,} bytes from {tag} ({commit[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
