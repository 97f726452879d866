"""TensorBoard with many runs: the shared answers of app/tensorboard_server.py, the log folder's
experiment, and `make bench-tensorboard` in miniature."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

import pytest
from helpers import ROOT, TensorBoard, cli_env, wait_for

from app import cpu
from app.tensorboard_bench import copy_run
from app.tensorboard_server import SharedAnswers

RUNS_TABLE = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
              "colParams": [], "startIndex": 0, "sliceSize": 1000}


class Counted:
    """A WSGI app that takes `seconds` per answer and answers how many it has computed."""

    def __init__(self, seconds: float = 0.0, status: str = "200 OK"):
        self.seconds, self.status, self.calls, self.bodies = seconds, status, 0, []

    def __call__(self, environ, start_response):
        self.calls += 1
        calls = self.calls
        self.bodies.append(environ["wsgi.input"].read())
        time.sleep(self.seconds)
        start_response(self.status, [("Content-Type", "text/plain")])
        return [f"answer {calls}".encode()]


def ask(app, path: str = "/data/plugin/hparams/session_groups", body: bytes = b"{}", method: str = "POST"):
    import io

    started = {}
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
               "HTTP_ACCEPT_ENCODING": "gzip"}
    answer = b"".join(app(environ, lambda status, headers: started.update(status=status)))
    return started["status"], answer.decode()


def test_identical_requests_arriving_together_are_computed_once():
    inner = Counted(seconds=0.5)
    app = SharedAnswers(inner, seconds=10)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(ask(app))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner.calls == 1 and answers == [("200 OK", "answer 1")] * 8
    assert inner.bodies == [b"{}"]  # the request's body reached TensorBoard intact
    # Another body, query or route is another request; so is a route under an experiment's prefix.
    assert ask(app, body=b'{"sliceSize": 5}')[1] == "answer 2"
    assert ask(app, path="/experiment/e1/data/plugin/hparams/session_groups")[1] == "answer 3"
    assert inner.calls == 3


def test_a_shared_answer_is_refreshed_after_its_seconds_while_the_old_one_is_served_meanwhile():
    inner = Counted(seconds=0.3)
    app = SharedAnswers(inner, seconds=0.5)
    assert ask(app)[1] == "answer 1"
    assert ask(app)[1] == "answer 1" and inner.calls == 1  # fresh: shared
    time.sleep(0.6)
    started = time.monotonic()
    assert ask(app)[1] == "answer 1"  # stale: served at once, the next one is being computed
    assert time.monotonic() - started < 0.2
    wait_for(lambda: ask(app)[1] == "answer 2", 5, "the refreshed answer")
    assert inner.calls == 2


def test_only_successful_answers_of_data_requests_are_shared():
    failing = Counted(status="500 Internal Server Error")
    app = SharedAnswers(failing, seconds=10)
    assert [ask(app) for _ in range(2)] == [("500 Internal Server Error", "answer 1"),
                                           ("500 Internal Server Error", "answer 2")]
    pages = Counted()
    app = SharedAnswers(pages, seconds=10)
    for path in ("/index.html", "/data/plugin/images/individualImage", "/data/plugin/histograms/histograms"):
        assert ask(app, path=path, method="GET")[1] != ask(app, path=path, method="GET")[1]


@pytest.fixture
def copies(trained, tmp_path):
    """A log folder of three copies of the session's real run, each an HParams session of its own."""
    _, run = trained
    logdir = tmp_path / "fit"
    rng = random.Random(0)
    for n in range(3):
        copy_run(run, logdir / f"copy-{n}", rng)
    return run, logdir


def sessions(server) -> set[str]:
    groups = server.post("/data/plugin/hparams/session_groups", RUNS_TABLE)["sessionGroups"]
    return {s["name"] for g in groups for s in g["sessions"]}


def test_tensorboard_as_compose_starts_it_shows_a_new_run_within_seconds_while_users_keep_asking(copies):
    run, logdir = copies
    server = TensorBoard(logdir)
    asking, stop, user = [], threading.Event(), None
    try:
        wait_for(lambda: sessions(server) == {"copy-0", "copy-1", "copy-2"}, 60, "the three copies")

        def keep_asking():  # a user's HParams tab, again and again: the answer is shared
            while not stop.is_set():
                asking.append(sessions(server))

        user = threading.Thread(target=keep_asking)
        user.start()
        copy_run(run, logdir / "copy-3", random.Random(1))
        started = time.monotonic()
        wait_for(lambda: "copy-3" in asking[-1], 10, "the new run in the HParams tab")
        shown_after = time.monotonic() - started
        # Its curves too, as the Scalars tab asks for them (the run's two epochs, in TensorBoard's order).
        points = server.get("/data/plugin/scalars/scalars?run=copy-3/validation&tag=epoch_accuracy")
        assert [step for _, step, _ in points] == [0, 1]
    finally:
        stop.set()
        if user:
            user.join(timeout=30)  # its last request answered before TensorBoard stops
        server.stop()
    assert len(asking) > 5 and shown_after < 10


def test_runs_starting_together_write_the_log_folders_experiment_once_and_replace_an_older_one(tmp_path):
    from tensorboard.compat.proto import event_pb2

    from app.tabs import hparams
    from app.tensorboard_bench import _records

    older = tmp_path / "events.out.tfevents.0.experiment-0123456789ab.v2"  # an older version's columns
    older.write_bytes(b"")
    together, written = threading.Barrier(8), []

    def run_start():
        together.wait()
        written.append(hparams.ensure_experiment(tmp_path))

    threads = [threading.Thread(target=run_start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [experiment] = set(written)
    assert list(tmp_path.iterdir()) == [experiment]  # the older one gone, nothing half-written left
    events = [event_pb2.Event.FromString(r) for r in _records(experiment)]
    assert events[0].file_version == "brain.Event:2"
    assert [v.tag for v in events[1].summary.value] == ["_hparams_/experiment"]


def test_bench_tensorboard_in_miniature_names_the_cpu_and_times_every_request_without_errors(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "app.tensorboard_bench", "--runs", "3", "--epochs", "2",
                             "--clients", "1,2", "--seconds", "2", "--work", str(tmp_path),
                             "--out", str(out)],
                            cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["cpu"] == cpu.description() and report["cpu"] in result.stdout
    assert report["hparams_tab_trials"] == 3 and report["new_run"]["seconds"] < 10
    kinds = {"runs", "scalars tags", "scalars_multirun", "hparams experiment (HParams tab)",
             "hparams session_groups (HParams tab)", "hparams experiment (runs table)",
             "hparams session_groups (runs table)"}
    assert {(r["kind"], r["clients"]) for r in report["rounds"]} == {(k, c) for k in kinds for c in (1, 2)}
    assert all(r["errors"] == 0 and r["requests"] > 0 and 0 < r["p50"] <= r["p95"] <= r["max"]
               for r in report["rounds"])
    assert report["command"][1:3] == ["-m", "app.tensorboard_server"]  # as docker-compose.yml starts it


def test_answers_beyond_the_memory_budget_are_forgotten_least_recently_asked_first(monkeypatch):
    from app import tensorboard_server

    monkeypatch.setattr(tensorboard_server, "BUDGET", 3 * len("answer 1"))
    inner = Counted()
    app = SharedAnswers(inner, seconds=60)
    for n in range(4):  # four distinct requests: the first one asked no longer fits
        ask(app, body=str(n).encode())
    assert app.kept <= tensorboard_server.BUDGET and len(app.slots) == 3
    assert ask(app, body=b"3")[1] == "answer 4"  # remembered
    assert ask(app, body=b"0")[1] == "answer 5"  # forgotten: computed again
