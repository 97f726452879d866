"""The exported model at work, without TensorFlow Serving: docs/serving.md's REST bodies through a
fresh export's own signatures (by TensorFlow Serving's JSON rules, tools/rest_request.py), answering
as python -m app.predict does; predict's inputs and refusals; publishing versions; and the export's
ops against TensorFlow 2.20.0's registry, the TensorFlow that TensorFlow Serving 2.20.0 runs."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from helpers import ROOT, run_main
from PIL import Image

from app import predict, publish
from tools import rest_request, tf_ops

DOCS = ROOT / "docs" / "serving.md"
SEVEN = ROOT / "docs" / "seven.png"
CLASSES = [f"digit {d}" for d in range(10)]  # not their indices: the answers must carry the names


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding an export of an untrained model (its answers are as good as any here)."""
    import keras

    from app import export
    from app.model import build_model

    keras.utils.set_random_seed(1)
    folder = tmp_path_factory.mktemp("serving") / "logs" / "fit" / "r"
    folder.mkdir(parents=True)
    export.save(build_model((28, 28, 1), 10), CLASSES, (28, 28), 1, str(folder / "saved_model"))
    return folder


@pytest.fixture(scope="module")
def loaded(run):
    import tensorflow as tf

    return tf.saved_model.load(str(run / "saved_model"))


def predicted(run, *files: str) -> list[dict]:
    result = run_main(predict.main, str(run), *files, "--json", "--top", "10", cwd=run)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def docs_bodies() -> dict[str, dict]:
    text = DOCS.read_text()
    return {name: json.loads(body) for name, body in
            re.findall(r"<!-- rest: ([\w ]+) -->\n```json\n(.+?)\n```", text, re.DOTALL)}


def shape_of(value):
    """The answer's structure: keys, list lengths and value kinds, not the numbers."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape_of(v) for v in value]
    return type(value).__name__


def test_the_docs_requests_answer_as_the_docs_show_and_as_predict_does(run, loaded):
    bodies = docs_bodies()
    assert sorted(bodies) == ["columnar answer", "columnar request", "row answer", "row request"]
    seven = base64.b64encode(SEVEN.read_bytes()).decode()
    assert bodies["row request"]["instances"] == [{"b64": seven}]  # the committed picture, exactly
    assert bodies["columnar request"]["inputs"] == {"images": [{"b64": seven}]}
    [expected] = predicted(run, str(SEVEN))
    for form in ("row", "columnar"):
        answer = rest_request.answer(loaded, bodies[f"{form} request"])
        assert shape_of(answer) == shape_of(bodies[f"{form} answer"]), form
        rows = answer["predictions"] if form == "row" else None
        classes = [p["class"] for p in rows] if rows else answer["outputs"]["class"]
        assert classes == [expected["class"]]
        probabilities = (answer["predictions"][0] if form == "row" else answer["outputs"])["probabilities"]
        row = probabilities if form == "row" else probabilities[0]
        assert max(row) == pytest.approx(expected["probability"], abs=1e-6)


def test_several_pictures_png_and_jpeg_in_both_forms(run, loaded, tmp_path):
    jpeg = tmp_path / "seven.jpg"
    Image.open(SEVEN).convert("RGB").resize((56, 40)).save(jpeg, quality=90)  # colour, another size
    files = [SEVEN, jpeg, SEVEN]
    encoded = [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in files]
    expected = [a["class"] for a in predicted(run, *map(str, files))]
    row = rest_request.answer(loaded, {"signature_name": "images", "instances": encoded})
    columnar = rest_request.answer(loaded, {"signature_name": "images", "inputs": {"images": encoded}})
    assert [p["class"] for p in row["predictions"]] == columnar["outputs"]["class"] == expected
    assert all(c in CLASSES for c in expected)


def test_pixels_through_the_default_signature_as_an_npz_through_predict(run, loaded, tmp_path):
    pixels = np.asarray(Image.open(SEVEN))[..., np.newaxis]
    answer = rest_request.answer(loaded, {"instances": [pixels.tolist(), (255 - pixels).tolist()]})
    np.savez(tmp_path / "two.npz", x=np.stack([pixels, 255 - pixels])[..., 0])
    expected = [a["class"] for a in predicted(run, str(tmp_path / "two.npz"))]
    assert [p["class"] for p in answer["predictions"]] == expected


def test_a_request_with_both_forms_or_a_bad_binary_value_is_refused(loaded):
    with pytest.raises(rest_request.BadRequest, match="either 'instances' or 'inputs'"):
        rest_request.answer(loaded, {"instances": [], "inputs": []})
    with pytest.raises(rest_request.BadRequest, match="one key 'b64'"):
        rest_request.answer(loaded, {"signature_name": "images", "instances": [{"b64": "x", "more": 1}]})
    with pytest.raises(rest_request.BadRequest, match="not found"):
        rest_request.answer(loaded, {"signature_name": "nope", "instances": []})


@pytest.mark.parametrize("header, says", [
    ({"descr": "|V1400", "shape": (1_000_000, 28, 28)}, "x is |V1400 (1000000, 28, 28)"),  # 1.1 TB
    ({"descr": "|u1", "shape": (1_000_000, 28_000, 28)}, "x is uint8 (1000000, 28000, 28)"),  # 784 GB
])
def test_predict_refuses_an_npz_by_its_header_before_allocating_what_it_claims(run, tmp_path, header, says):
    import io
    import zipfile

    npy = io.BytesIO()
    np.lib.format.write_array_header_2_0(npy, {"fortran_order": False, **header})
    with zipfile.ZipFile(tmp_path / "claims.npz", "w") as archive:
        archive.writestr("x.npy", npy.getvalue() + bytes(784))
    result = run_main(predict.main, str(run), str(tmp_path / "claims.npz"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and says in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_predict_prints_one_line_per_picture_and_takes_folders(run, tmp_path):
    folder = tmp_path / "pictures" / "inner"
    folder.mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(SEVEN.read_bytes())
    (folder / "notes.txt").write_text("not a picture: ignored in a folder")
    result = run_main(predict.main, str(run), str(tmp_path / "pictures"), "--top", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(folder / "a.png"), str(folder / "b.png")]
    assert all(re.fullmatch(r"[^\t]+\tdigit \d \d\.\d{4}, digit \d \d\.\d{4}", line) for line in lines), lines


@pytest.mark.parametrize("make, says", [
    (lambda p: p / "nothing", "not a model"),
    (lambda p: p, "not a model"),  # a folder without an export
])
def test_predict_refuses_what_is_not_a_model(tmp_path, make, says):
    result = run_main(predict.main, str(make(tmp_path)), str(SEVEN), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and says in line


def test_predict_refuses_bad_pictures_and_arrays_in_one_line(run, tmp_path):
    cut = tmp_path / "cut.png"
    cut.write_bytes(SEVEN.read_bytes()[:-60])  # the header whole
    junk = tmp_path / "junk.png"
    junk.write_text("not a picture")
    np.savez(tmp_path / "rgb.npz", x=np.zeros((2, 28, 28, 3), np.uint8))
    np.savez(tmp_path / "floats.npz", x=np.zeros((2, 28, 28), np.float32))
    for path, says in ((cut, "cut.png: does not decode as a picture"), (junk, "junk.png: not a picture"),
                       (tmp_path / "rgb.npz", "pixels of shape (28, 28, 3), but the model takes (28, 28, 1)"),
                       (tmp_path / "floats.npz", "x is float32"), (tmp_path / "none.png", "no such file")):
        result = run_main(predict.main, str(run), str(path), cwd=tmp_path)
        assert result.returncode == 2, (path, result.stdout, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith("error: ") and says in line, line


def test_publishing_two_runs_gives_versions_1_and_2_and_the_newest_is_served(run, tmp_path):
    models = tmp_path / "models"
    for expected in ("1", "2"):
        result = run_main(publish.main, str(run), "--models", str(models), "--name", "digits", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        said = f"published {run / 'saved_model'} as version {expected} of model digits"
        assert result.stdout.startswith(said)
    assert sorted(p.name for p in (models / "digits").iterdir()) == ["1", "2"]  # nothing hidden left
    assert (models / "digits" / "2" / "saved_model.pb").is_file()
    assert predict.find_model(str(models / "digits"), "logs") == models / "digits" / "2"
    (models / "digits" / "notes.txt").write_text("x")
    refused = run_main(publish.main, str(run), "--models", str(models), "--name", "digits", cwd=tmp_path)
    assert refused.returncode == 2 and "not only numbered versions" in refused.stderr
    bad = run_main(publish.main, str(run), "--name", "../up", cwd=tmp_path)
    assert bad.returncode == 2 and "--name '../up'" in bad.stderr


def test_the_exports_ops_are_all_in_tensorflow_2_20s_registry(run):
    vendored = ROOT / "tests" / "data" / "tensorflow-2.20.0" / "ops.txt"
    registry = tf_ops.parse(vendored.read_text().splitlines())
    uses = tf_ops.used(run / "saved_model")
    assert {"DecodeImage", "ScaleAndTranslate", "Conv2D", "StatefulPartitionedCall"} <= set(uses)
    assert tf_ops.problems(uses, registry) == []
    # The check finds what a registry lacks: an op, or an attribute of one.
    without = {k: v for k, v in registry.items() if k != "DecodeImage"}
    assert tf_ops.problems(uses, without) == ["op DecodeImage is not in the registry"]
    line, attrs = registry["DecodeImage"]
    fewer = {**registry, "DecodeImage": (line, attrs - {"expand_animations"})}
    assert tf_ops.problems(uses, fewer) == ["op DecodeImage has no attribute expand_animations"]


def test_the_rest_tool_answers_on_the_command_line(run, tmp_path):
    body = tmp_path / "request.json"
    body.write_text(json.dumps({"signature_name": "images",
                                "instances": [{"b64": base64.b64encode(SEVEN.read_bytes()).decode()}]}))
    result = run_main(rest_request.main, str(run), str(body), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0]["class"] in CLASSES
