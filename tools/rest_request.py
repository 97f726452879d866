"""python -m tools.rest_request MODEL BODY.json: what TensorFlow Serving's REST API would answer to a
predict request, computed here by the SavedModel's own signatures, without TensorFlow Serving.

MODEL is anything python -m app.predict takes (a run, an export, a published model). BODY is the
JSON a client POSTs to /v1/models/<name>:predict. The request and the answer follow TensorFlow
Serving 2.20's rules (tensorflow_serving/g3doc/api_rest.md, and util/json_tensor.cc, which
implements them):
  - `signature_name` picks the signature (default serving_default);
  - `instances` (row format: a list, one item per example; with several inputs each item an object
    of them) is answered with {"predictions": [...]}, `inputs` (columnar: the tensor, or an object of
    named tensors) with {"outputs": ...}; a request with both, or neither, is refused;
  - a value of a string input may be {"b64": "..."}: its bytes, base64-encoded (any string input,
    whatever its name); a plain JSON string is taken as its UTF-8 bytes;
  - a string output is written as {"b64": ...} only when its name ends in "_bytes", else as a string.
docs/serving.md's requests are sent through here by tests/unit/test_serving.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import numpy as np


class BadRequest(Exception):
    """What TensorFlow Serving would answer with status 400: {"error": message}."""


def answer(loaded, body: dict) -> dict:
    """The JSON answer of `loaded` (a tf.saved_model.load result) to the predict request `body`."""
    import tensorflow as tf

    signature = loaded.signatures.get(body.get("signature_name", "serving_default"))
    if signature is None:
        raise BadRequest(f"Serving signature name: \"{body.get('signature_name')}\" not found in "
                         "signature def")
    specs = signature.structured_input_signature[1]
    if ("instances" in body) == ("inputs" in body):
        raise BadRequest("a request has either 'instances' or 'inputs', not both and not neither")
    if "instances" in body:
        rows = body["instances"]
        if len(specs) == 1 and not all(isinstance(r, dict) and set(r) == set(specs) for r in rows):
            columns = {next(iter(specs)): rows}
        else:
            columns = {name: [r[name] for r in rows] for name in specs}
    else:
        given = body["inputs"]
        named = isinstance(given, dict) and set(given) == set(specs)
        columns = given if named else {next(iter(specs)): given}
    tensors = {name: tf.constant(_values(columns[name], spec.dtype), dtype=spec.dtype)
               for name, spec in specs.items()}
    outputs = {name: value.numpy() for name, value in signature(**tensors).items()}
    shown = {name: _json(name, value) for name, value in sorted(outputs.items())}
    if "instances" in body:
        count = len(next(iter(outputs.values())))
        rows = [{name: shown[name][i] for name in shown} for i in range(count)]
        return {"predictions": [next(iter(r.values())) for r in rows] if len(shown) == 1 else rows}
    return {"outputs": next(iter(shown.values())) if len(shown) == 1 else shown}


def _values(value, dtype):
    import tensorflow as tf

    if dtype != tf.string:
        return np.asarray(value)

    def decode(v):
        if isinstance(v, dict):
            if set(v) != {"b64"} or not isinstance(v["b64"], str):
                raise BadRequest("a binary value is an object with the one key 'b64'")
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [decode(x) for x in v]
        return v.encode() if isinstance(v, str) else v

    return decode(value)


def _json(name: str, value: np.ndarray):
    if value.dtype == object:  # strings
        if name.endswith("_bytes"):
            return _map(value, lambda b: {"b64": base64.b64encode(b).decode()})
        return _map(value, lambda b: b.decode())
    if value.dtype.kind == "f":  # as short as the float32 value allows, as TensorFlow Serving writes it
        return _map(value, lambda v: float(str(np.float32(v))))
    return value.tolist()


def _map(value, fn):
    if isinstance(value, np.ndarray):
        return [_map(v, fn) for v in value] if value.ndim else fn(value.item())
    return fn(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.rest_request", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a run, an exported or a published model (as python -m app.predict takes)")
    p.add_argument("body", help="the request's JSON body, a file (- for stdin)")
    p.add_argument("--log-dir", default="logs")
    args = p.parse_args(argv)
    import tensorflow as tf

    from app.data import DataError
    from app.predict import find_model

    try:
        loaded = tf.saved_model.load(str(find_model(args.model, args.log_dir)))
        body = json.loads(sys.stdin.read() if args.body == "-" else Path(args.body).read_text())
        print(json.dumps(answer(loaded, body)))
    except (DataError, BadRequest, ValueError) as e:
        print(json.dumps({"error": str(e)}))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
