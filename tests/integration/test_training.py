"""A real run on real digits: what it prints, what it saves, and what TensorBoard shows of it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    ROOT,
    SLICE,
    events,
    metrics,
    run_cli,
    run_config,
    scalar_steps,
    scalar_values,
    slice_arrays,
)

LAYERS_WITH_WEIGHTS = ["conv1", "conv2", "dense", "output"]
TABS = ["scalars", "graphs", "distributions", "histograms", "images", "hparams", "pr_curves", "text"]


def test_output_names_the_device_each_epoch_and_the_result(trained):
    import keras
    import tensorflow as tf

    result, run_dir = trained
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"TensorFlow {tf.__version__}, Keras {keras.__version__}: ")
    assert "training on CPU" in lines[0] or "training on GPU" in lines[0]
    # Not a terminal: three lines per epoch (docs/training.md), no progress bar redrawn with carriage returns.
    assert [line for line in lines if line.startswith("Epoch ")] == ["Epoch 1/2", "Epoch 2/2"]
    epoch_lines = lines[lines.index("Epoch 1/2"):lines.index("Epoch 2/2")]
    assert len(epoch_lines) == 3 and " epoch 1/2: accuracy=" in epoch_lines[1], epoch_lines
    assert epoch_lines[2].startswith("19/19 - ") and "val_accuracy: " in epoch_lines[2], epoch_lines
    assert "\r" not in result.stdout
    result = metrics(run_dir)
    assert lines[-1] == (f"run logs/fit/tiny: test accuracy {result['test_accuracy']:.2%}, "
                         f"test loss {result['test_loss']:.4f}")


def test_run_folder_holds_config_metrics_and_models(trained):
    _, run_dir = trained
    config = run_config(run_dir)
    assert config["epochs"] == 2 and config["data"] == str(SLICE) and config["run_name"] == "tiny"
    result = metrics(run_dir)
    assert result["epochs_completed"] == 2 and len(result["epoch_seconds"]) == 2
    assert result["train_images_per_second"] > 0 and result["train_images"] == 1200
    # Two epochs on 1,200 digits learn something real: far above the 10 % of guessing.
    assert result["test_accuracy"] > 0.7
    assert len(result["history"]["val_accuracy"]) == 2


def test_saved_models_predict_like_the_trained_one(trained):
    import keras
    import tensorflow as tf

    _, run_dir = trained
    digits = slice_arrays()
    x, y = digits["x_test"][..., None].astype("float32") / 255, digits["y_test"]
    accuracy = metrics(run_dir)["test_accuracy"]
    model = keras.models.load_model(run_dir / "model.keras")
    assert np.mean(model.predict(x, verbose=0).argmax(1) == y) == pytest.approx(accuracy, abs=1e-6)
    exported = tf.saved_model.load(str(run_dir / "saved_model"))  # keep it: its signatures need its variables
    # The pixels as the data holds them (uint8 0-255): the scaling is inside the export.
    served = exported.signatures["serving_default"](pixels=tf.constant(digits["x_test"][..., None]))
    assert np.mean(served["class_index"].numpy() == y) == pytest.approx(accuracy, abs=1e-6)
    assert [c.decode() for c in served["class"].numpy()] == [str(i) for i in served["class_index"].numpy()]
    assert exported.class_names.numpy().tolist() == [str(d).encode() for d in range(10)]


def test_scalars_for_train_and_validation_every_epoch(trained):
    _, run_dir = trained
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate"):
        assert scalar_steps(run_dir / "train", tag) == [0, 1], tag
    for tag in ("epoch_loss", "epoch_accuracy"):
        assert scalar_steps(run_dir / "validation", tag) == [0, 1], tag
    # The cosine schedule: half the initial 0.005 after the first of two epochs, zero at the end.
    assert scalar_values(run_dir / "train", "epoch_learning_rate") == pytest.approx([0.0025, 0.0], abs=1e-9)
    # Our own validation pass reports what Keras' evaluate() reports for the same model.
    result = metrics(run_dir)
    validation = run_dir / "validation"
    assert scalar_values(validation, "epoch_accuracy")[-1] == pytest.approx(result["test_accuracy"])
    assert scalar_values(validation, "epoch_loss")[-1] == pytest.approx(result["test_loss"], rel=1e-4)


def test_batch_scalars_move_within_an_epoch(trained):
    _, run_dir = trained
    steps = scalar_steps(run_dir, "batch_loss")
    # 1,200 images in batches of 64 is 19 steps an epoch: a point every 5 steps, 7 in all.
    assert steps == sorted(set(steps)) and len(steps) == 7 and steps[-1] == 35
    assert scalar_steps(run_dir, "batch_accuracy") == steps


def test_histograms_of_every_weight_and_bias_every_epoch(trained):
    _, run_dir = trained
    tags = events(run_dir / "train").Tags()["tensors"]
    for layer in LAYERS_WITH_WEIGHTS:
        for weight in ("kernel", "bias"):
            tag = f"mnist_cnn/{layer}/{weight}/histogram"
            assert tag in tags
            assert scalar_steps(run_dir / "train", tag) == [0, 1]


def test_images_pr_curves_text_hparams_and_graphs(trained):
    import io

    import tensorflow as tf
    from PIL import Image

    _, run_dir = trained
    run = events(run_dir)
    tags = run.Tags()["tensors"]
    for tag in ("confusion_matrix", "misclassified"):
        assert [e.step for e in run.Tensors(tag)] == [0, 1]
        png = tf.make_ndarray(run.Tensors(tag)[-1].tensor_proto)[2]  # width, height, PNG bytes
        assert Image.open(io.BytesIO(png)).size[0] > 300
    assert sorted(t for t in tags if t.endswith("/pr_curves")) == [f"class_{c}/pr_curves" for c in range(10)]
    assert {"config", "model_summary"} <= set(tags)
    assert "_hparams_/session_start_info" in tags
    assert run.Graph() is not None  # the op-level graph of the forward pass
    assert any(n.op == "Conv2D" for n in run.Graph().node)
    assert "keras" in events(run_dir / "train").Tags()["tensors"]  # Keras' conceptual graph



def test_the_log_folder_holds_the_experiment_the_hparams_tab_shows_for_a_plain_run(trained, tensorboard):
    _, run_dir = trained
    [experiment_file] = (run_dir.parent / "_hparams").glob("*tfevents*")  # one file, in a run of its own
    assert experiment_file.name.startswith("events.out.tfevents.0.experiment-")
    assert not list(run_dir.parent.glob("*tfevents*"))  # none beside the runs: no run named "."
    assert "_hparams" in tensorboard.get("/data/runs") and "." not in tensorboard.get("/data/runs")
    experiment = tensorboard.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    # The metrics in the order users read them, with readable names, not guessed from the tags.
    assert [m["displayName"] for m in experiment["metricInfos"]] == [
        "validation accuracy", "validation loss", "test accuracy", "epochs trained",
        "pruned (1: stopped early)", "exported epoch (the best)", "test loss", "training accuracy",
        "training loss"]
    # The settings a sweep can search first (TensorBoard sorts those by name), then the rest.
    names = [h["name"] for h in experiment["hparamInfos"]]
    assert names[:8] == ["batch_size", "channels", "dataset", "epochs", "image_size", "learning_rate",
                         "lr_schedule", "seed"]
    assert set(names[8:]) == {"sweep", "trial", "precision", "optimizer", "dropout", "data", "classes",
                              "train_images", "validation_images"}


def test_tensorboard_serves_every_tab(tensorboard):
    plugins = tensorboard.get("/data/plugins_listing")
    assert [tab for tab in TABS if not plugins[tab]["enabled"]] == []
    runs = tensorboard.get("/data/runs")
    assert {"tiny", "tiny/train", "tiny/validation"} <= set(runs)
    points = tensorboard.get("/data/plugin/scalars/scalars?run=tiny/validation&tag=epoch_accuracy")
    assert [p[1] for p in points] == [0, 1]
    histograms = tensorboard.get("/data/plugin/histograms/tags")["tiny/train"]
    assert "mnist_cnn/conv1/kernel/histogram" in histograms
    images = tensorboard.get("/data/plugin/images/images?run=tiny&tag=confusion_matrix")
    png = tensorboard.get(f"/data/plugin/images/individualImage?{images[-1]['query']}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(tensorboard.get("/data/plugin/pr_curves/tags")["tiny"]) == 10
    assert "config" in tensorboard.get("/data/plugin/text/tags")["tiny"]
    graphs = tensorboard.get("/data/plugin/graphs/info")
    assert graphs["tiny"]["run_graph"] and graphs["tiny/train"]["tags"]["keras"]["conceptual_graph"]
    groups = tensorboard.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 10})
    [group] = groups["sessionGroups"]
    assert group["name"] == "tiny" and group["hparams"]["learning_rate"] == 0.005
    # What describes the model is read from the model: its optimizer, dropout rate and dtype policy.
    assert group["hparams"]["optimizer"] == "adam" and group["hparams"]["dropout"] == 0.5
    assert group["hparams"]["precision"] in ("float32", "mixed_bfloat16", "mixed_float16")
    assert any(m["name"]["tag"] == "epoch_accuracy" and m["name"]["group"] == "validation"
               for m in group["metricValues"])


def test_same_seed_same_result(tmp_path):
    args = ["--data", str(SLICE), "--epochs", "1", "--seed", "7"]
    first = run_cli(*args, "--run-name", "a", cwd=tmp_path)
    second = run_cli(*args, "--run-name", "b", cwd=tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    a, b = (metrics(tmp_path / "logs" / "fit" / n) for n in "ab")
    assert a["test_loss"] == b["test_loss"] and a["history"] == b["history"]


def test_profile_batches_write_a_trace_for_the_profile_tab(tmp_path):
    result = run_cli("--data", str(SLICE), "--epochs", "1", "--batch-size", "32", "--profile-batches", "2,4",
                     "--run-name", "profiled", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    profile = tmp_path / "logs" / "fit" / "profiled" / "train" / "plugins" / "profile"
    traces = list(profile.glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 10_000


def test_saved_model_cli_shows_the_signatures_docs_serving_describes(trained):
    """docs/serving.md's table of the export's signatures is what TensorFlow's own saved_model_cli shows."""
    _, run_dir = trained
    cli = shutil.which("saved_model_cli", path=str(Path(sys.executable).parent))
    command = [cli, "show", "--dir", str(run_dir / "saved_model"), "--tag_set", "serve", "--all"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=300).stdout
    signatures = {}
    for name, body in re.findall(r"signature_def\['(\w+)'\]:\n(.*?)Method name is", shown, re.DOTALL):
        signatures[name] = re.findall(
            r"(inputs|outputs)\['(\w+)'\] tensor_info:\n\s+dtype: (\w+)\n\s+shape: (.+)\n", body)
    assert signatures["serving_default"] == [
        ("inputs", "pixels", "DT_UINT8", "(-1, 28, 28, 1)"), ("outputs", "class", "DT_STRING", "(-1)"),
        ("outputs", "class_index", "DT_INT64", "(-1)"), ("outputs", "probabilities", "DT_FLOAT", "(-1, 10)")]
    images = [("inputs", "images", "DT_STRING", "(-1)"), *signatures["serving_default"][1:]]
    assert signatures["images"] == images
    table = (ROOT / "docs" / "serving.md").read_text()
    assert "| `serving_default` | `pixels`: uint8 `(-1, 28, 28, 1)`" in table
    assert "`probabilities` float `(-1, 10)`, `class` string `(-1)`" in table
    assert "| `images` | `images`: string `(-1)`" in table
