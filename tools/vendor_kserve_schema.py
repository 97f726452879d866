"""Vendor KServe's InferenceService v1beta1 schema for tests/unit/test_kserve.py, compactly.

    python -m tools.vendor_kserve_schema MIRROR [--tag v0.20.0]

MIRROR is a git clone (bare is fine) of github.com/kserve/kserve. The CRD at TAG,
config/crd/full/serving.kserve.io_inferenceservices.yaml (about 2 MB), becomes
tests/data/kserve/inferenceservice-v1beta1.schema.json: its v1beta1 openAPIV3Schema with

- every `description` dropped;
- `status` dropped (the server sets it; a manifest has none);
- every subschema that occurs more than once (the Container, PodSpec, Probe... schemas each framework
  of the predictor, the transformer and the explainer repeat) written once under `$defs` and referenced
  with `$ref`, which JSON Schema validators resolve. Nothing else changes: types, enums, patterns,
  required fields and the x-kubernetes-* markers are kept as KServe publishes them.

It writes the source (repository, tag, commit, path, SHA-256 of the CRD) into the file's `x-kserve-source`;
tests/data/kserve/README.md repeats them. Reads only the mirror; imports nothing of app/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPOSITORY = "https://github.com/kserve/kserve"
CRD_PATH = "config/crd/full/serving.kserve.io_inferenceservices.yaml"
VERSION = "v1beta1"
OUT = Path(__file__).resolve().parents[1].joinpath(
    "tests", "data", "kserve", f"inferenceservice-{VERSION}.schema.json")
MIN_SHARED = 200  # characters of compact JSON below which a repeated subschema stays inline
SCHEMA_LISTS = ("anyOf", "allOf", "oneOf")


def subschemas(node: dict) -> list[tuple[str, str | int | None, dict]]:
    """The schemas directly inside `node`, as (keyword, key, schema). Only these are schemas: a
    `properties` mapping's keys are field names (a field may be called `description`)."""
    found = [("properties", name, child) for name, child in (node.get("properties") or {}).items()]
    if isinstance(node.get("items"), dict):
        found.append(("items", None, node["items"]))
    if isinstance(node.get("additionalProperties"), dict):
        found.append(("additionalProperties", None, node["additionalProperties"]))
    found += [(keyword, i, child)
              for keyword in SCHEMA_LISTS for i, child in enumerate(node.get(keyword) or [])]
    return found


def rebuilt(node: dict, children: dict[tuple[str, str | int | None], dict]) -> dict:
    """`node` with its subschemas replaced by `children` (same keys as subschemas() gives)."""
    out = {}
    for keyword, value in node.items():
        if keyword == "properties":
            out[keyword] = {name: children[("properties", name)] for name in value}
        elif keyword in ("items", "additionalProperties") and isinstance(value, dict):
            out[keyword] = children[(keyword, None)]
        elif keyword in SCHEMA_LISTS:
            out[keyword] = [children[(keyword, i)] for i in range(len(value))]
        else:
            out[keyword] = value
    return out


def without_descriptions(node: dict) -> dict:
    kept = {k: v for k, v in node.items() if k != "description"}
    return rebuilt(kept, {(kw, key): without_descriptions(child) for kw, key, child in subschemas(kept)})


def canonical(node) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def shared(root: dict) -> dict:
    """`root` with every subschema that occurs twice or more (and is not tiny) moved to `$defs`."""
    counts: dict[str, int] = {}

    def count(node: dict) -> None:
        key = canonical(node)
        counts[key] = counts.get(key, 0) + 1
        for _, _, child in subschemas(node):
            count(child)

    count(root)
    defs: dict[str, dict] = {}
    names: dict[str, str] = {}  # canonical text -> name in $defs

    def name_for(hint: str) -> str:
        base = hint or "schema"
        name, n = base, 2
        while name in defs or name in names.values():
            name, n = f"{base}{n}", n + 1
        return name

    def visit(node: dict, hint: str) -> dict:
        key = canonical(node)
        if counts[key] > 1 and len(key) >= MIN_SHARED:
            if key not in names:
                names[key] = name = name_for(hint)
                defs[name] = {}  # reserve the name before the children take theirs
                defs[name] = inner(node, hint)
            return {"$ref": f"#/$defs/{names[key]}"}
        return inner(node, hint)

    def inner(node: dict, hint: str) -> dict:
        children = {}
        for keyword, key, child in subschemas(node):
            child_hint = {"properties": str(key), "items": f"{hint}Item",
                          "additionalProperties": f"{hint}Value"}.get(keyword, f"{hint}{keyword}{key}")
            children[(keyword, key)] = visit(child, child_hint)
        return rebuilt(node, children)

    body = inner(root, "")
    return {**body, "$defs": defs}


def expanded(node, defs: dict):
    """`node` with every `$ref` into `defs` replaced by what it names: the schema before shared()."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return expanded(defs[node["$ref"].removeprefix("#/$defs/")], defs)
        return {k: expanded(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [expanded(v, defs) for v in node]
    return node


def vendored(crd_text: str, source: dict) -> dict:
    crd = yaml.safe_load(crd_text)
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    schema = without_descriptions(version["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)
    compact = shared(schema)
    defs = compact.pop("$defs")
    if expanded(compact, defs) != schema:  # the $refs must stand for exactly what they replaced
        raise AssertionError("the shared subschemas do not expand back to the schema")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": f"KServe's InferenceService {VERSION} openAPIV3Schema, descriptions and status "
                        "dropped, repeated subschemas under $defs: tools/vendor_kserve_schema.py, "
                        "tests/data/kserve/README.md",
            "x-kserve-source": source,
            **compact, "$defs": defs}


def git(mirror: str, *args: str) -> str:
    return subprocess.run(["git", "-C", mirror, *args], capture_output=True, text=True, check=True).stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.vendor_kserve_schema",
                                description=__doc__.split("\n")[0])
    p.add_argument("mirror", help="a git clone of github.com/kserve/kserve (bare is fine)")
    p.add_argument("--tag", default="v0.20.0")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    try:
        commit = git(args.mirror, "rev-parse", f"{args.tag}^{{commit}}").strip()
        text = git(args.mirror, "show", f"{commit}:{CRD_PATH}")
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        print(f"error: {args.mirror}: no {CRD_PATH} at {args.tag}: "
              f"{getattr(error, 'stderr', '') or error}".strip(), file=sys.stderr)
        return 2
    source = {"repository": REPOSITORY, "tag": args.tag, "commit": commit, "path": CRD_PATH,
              "sha256": hashlib.sha256(text.encode()).hexdigest(), "license": "Apache-2.0"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(vendored(text, source), separators=(",", ":"), sort_keys=False) + "\n")
    print(f"{args.out}: {args.out.stat().st_size:,} bytes from {args.tag} ({commit[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
