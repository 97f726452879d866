"""Your own pictures through the container stack, as an unprivileged user: `make up DATA_DIR=<a folder
of pictures>` trains in the container from the read-only mount, the picture cache lands on the cache
volume, TensorBoard shows the class names; `make predict` answers in the container; `make publish`
puts a version into ./models; the serve profile renders locked down (its image cannot be pulled here)."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from helpers import wait_for
from stack import tb_answers, tb_get

from tools.common import COLOURS, write_pictures

pytestmark = pytest.mark.e2e
RUN = "e2e-pictures"


@pytest.fixture(scope="module")
def pictures(stack, tmp_path_factory):
    folder = write_pictures(tmp_path_factory.mktemp("pictures") / "pets", COLOURS, per_class=12)
    for path in [folder.parent, folder, *folder.rglob("*")]:  # readable by the user, owned by root
        path.chmod(0o755 if path.is_dir() else 0o644)
    os.chmod(folder.parent.parent, 0o755)
    before = sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))
    result = stack.run("make", "up", f"TRAIN_ARGS=--epochs 2 --batch-size 8 --run-name {RUN}",
                       env={"DATA_DIR": str(folder)})
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, before, result.stdout


def test_make_up_trains_on_a_folder_of_pictures_in_the_container(stack, pictures):
    folder, before, output = pictures
    assert "data: /data: 3 classes (Red apple: 10, green leaf: 10, sky blue: 10)" in output
    assert "decoded 36 pictures of /data" in output
    assert "into the cache /cache/mnist-tensorboard/pictures" in output
    run = stack.dir / "logs" / "fit" / RUN
    config = json.loads((run / "config.json").read_text())
    assert (config["image_size"], config["channels"], config["data"]) == ("24x32", "3", "/data")
    assert os.stat(run / "metrics.json").st_uid == stack.uid  # the user's, in their ./logs
    # Nothing was written into the pictures' folder (mounted read-only): the cache is on the volume.
    assert sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*")) == before
    listed = stack.run("docker", "compose", "run", "--rm", "--entrypoint", "ls", "trainer",
                       "/cache/mnist-tensorboard/pictures")
    assert listed.returncode == 0 and listed.stdout.split(), listed.stdout + listed.stderr


def test_a_second_run_reads_the_cache_instead_of_decoding(stack, pictures):
    folder, _, _ = pictures
    again = stack.run("docker", "compose", "run", "--rm", "trainer", "--data", "/data", "--epochs", "1",
                      "--batch-size", "8", env={"DATA_DIR": str(folder)})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "decoded" not in again.stdout and "data: /data: 3 classes" in again.stdout


def test_tensorboard_shows_the_class_names(stack, pictures):
    if not tb_answers():
        assert stack.run("make", "tensorboard").returncode == 0
    wait_for(lambda: f"{RUN}/validation" in tb_get("/data/runs"), 120, "TensorBoard to list the run")
    curves = tb_get("/data/plugin/pr_curves/tags")[RUN]
    names = sorted(c["displayName"] for c in curves.values())
    assert names == ["0: Red apple", "1: green leaf", "2: sky blue"]
    [text] = tb_get(f"/data/plugin/text/text?run={RUN}&tag=config")
    assert "<td>green leaf</td>" in text["text"]


def test_make_predict_answers_in_the_container_as_the_user(stack, pictures):
    folder, _, _ = pictures
    result = stack.run("make", "predict", f"RUN={RUN}", "PICTURES=/data/sky blue", "PREDICT_ARGS=--json",
                       env={"DATA_DIR": str(folder)})
    assert result.returncode == 0, result.stdout + result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(answers) == 12 and all(a["file"].startswith("/data/sky blue/") for a in answers)
    assert sum(a["class"] == "sky blue" for a in answers) >= 10  # two epochs tell colours apart


def test_make_publish_then_the_serve_profile_renders_locked_down(stack, pictures):
    result = stack.run("make", "publish", f"RUN={RUN}")
    assert result.returncode == 0, result.stdout + result.stderr
    version = stack.dir / "models" / "model" / "1"
    assert (version / "saved_model.pb").is_file() and os.stat(version).st_uid == stack.uid
    rendered = stack.run("docker", "compose", "--profile", "serve", "config", "serving")
    assert rendered.returncode == 0, rendered.stderr
    serving = yaml.safe_load(rendered.stdout)["services"]["serving"]
    assert serving["image"] == "tensorflow/serving:2.20.0"
    assert serving["user"] == f"{stack.uid}:{stack.gid}" and serving["read_only"] is True
    assert serving["cap_drop"] == ["ALL"] and "no-new-privileges:true" in serving["security_opt"]
    assert [(p["host_ip"], p["target"]) for p in serving["ports"]] == [("127.0.0.1", 8501)]
    [models] = serving["volumes"]
    assert (models["source"], models["target"], models.get("read_only")) == (
        str(stack.dir / "models"), "/models", True)
    assert serving["environment"] == {"MODEL_NAME": "model"}
