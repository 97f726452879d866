"""python -m tools.tf_ops: which TensorFlow ops an export uses, and whether an older TensorFlow has them.

TensorFlow Serving's newest release is built on an older TensorFlow than the one that trains here
(docs/serving.md). A SavedModel loads there if every op it uses, with every attribute it sets, is
in that TensorFlow's op registry (GraphDef versions allow it: min_consumer is 0). So:

  python -m tools.tf_ops registry > ops.txt             the installed TensorFlow's every OpDef, one
                                                        a line (run it with the older TensorFlow,
                                                        e.g. in a venv with
                                                        pip install 'tensorflow-cpu>=2.20,<2.21')
  python -m tools.tf_ops used SAVED_MODEL               the ops and attributes the export uses
  python -m tools.tf_ops select ops.txt SAVED_MODEL...  the registry's lines for those ops: what
                                                        tests/data/tensorflow-2.20.0/ops.txt holds

tests/unit/test_serving.py checks a fresh export against that file.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def registry() -> list[str]:
    """Every OpDef of the installed TensorFlow, text format on one line, descriptions dropped."""
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session as c_api

    buffer = c_api.TF_GetAllOpList()
    ops = op_def_pb2.OpList.FromString(c_api.TF_GetBuffer(buffer))
    lines = []
    for op in sorted(ops.op, key=lambda o: o.name):
        op.ClearField("description")
        op.ClearField("summary")
        for part in (*op.input_arg, *op.output_arg, *op.attr):
            part.ClearField("description")
        lines.append(" ".join(str(op).split()))
    return lines


def used(saved_model: Path) -> dict[str, set[str]]:
    """{op: the attributes its nodes set} over the SavedModel's graphs and their function libraries."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel.FromString((saved_model / "saved_model.pb").read_bytes())
    found: dict[str, set[str]] = {}
    for graph in model.meta_graphs:
        nodes = [*graph.graph_def.node, *(n for f in graph.graph_def.library.function for n in f.node_def)]
        for node in nodes:
            found.setdefault(node.op, set()).update(a for a in node.attr if not a.startswith("_"))
    return found


def parse(lines: list[str]) -> dict[str, tuple[str, set[str]]]:
    """{op: (its OpDef line, its attribute names)} from `registry()`'s lines."""
    defs = {}
    for line in lines:
        name = re.match(r'name: "([^"]+)"', line)
        if name:
            defs[name.group(1)] = (line, set(re.findall(r'attr \{ name: "([^"]+)"', line)))
    return defs


def problems(uses: dict[str, set[str]], defs: dict[str, tuple[str, set[str]]]) -> list[str]:
    """What the registry lacks of what the export uses."""
    found = []
    for op, attrs in sorted(uses.items()):
        if op not in defs:
            found.append(f"op {op} is not in the registry")
        else:
            found += [f"op {op} has no attribute {a}" for a in sorted(attrs - defs[op][1])]
    return found


def main(argv: list[str]) -> int:
    if argv[:1] == ["registry"]:
        print("\n".join(registry()))
    elif argv[:1] == ["used"] and len(argv) == 2:
        for op, attrs in sorted(used(Path(argv[1])).items()):
            print(op, " ".join(sorted(attrs)))
    elif argv[:1] == ["select"] and len(argv) >= 3:
        defs = parse(Path(argv[1]).read_text().splitlines())
        names = sorted({op for path in argv[2:] for op in used(Path(path))})
        print("\n".join(defs[name][0] for name in names if name in defs))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
