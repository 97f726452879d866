"""TensorBoard with many runs: the shared answers of app/tensorboard_server.py, and the log folder's
experiment. A real TensorBoard over HTTP: tests/integration/test_tensorboard_live.py."""

from __future__ import annotations

import threading
import time

from helpers import wait_for

from app.tensorboard_server import SharedAnswers

RUNS_TABLE = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
              "colParams": [], "startIndex": 0, "sliceSize": 1000}


class Counted:
    """A WSGI app that answers how many answers it has computed; each waits for `release` (set
    unless a test clears it) and, with fail_first, the first one raises."""

    def __init__(self, seconds: float = 0.0, status: str = "200 OK", fail_first: bool = False):
        self.seconds, self.status, self.fail_first = seconds, status, fail_first
        self.calls, self.bodies = 0, []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, environ, start_response):
        self.calls += 1
        calls = self.calls
        self.bodies.append(environ["wsgi.input"].read())
        time.sleep(self.seconds)
        self.release.wait(timeout=10)
        if self.fail_first and calls == 1:
            raise RuntimeError(f"inner failure {calls}")
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
    now = [0.0]
    inner = Counted()
    app = SharedAnswers(inner, seconds=2, clock=lambda: now[0])
    assert ask(app)[1] == "answer 1"
    now[0] = 1.9
    assert ask(app)[1] == "answer 1" and inner.calls == 1  # fresh: shared
    now[0] = 2.1
    inner.release.clear()  # the next computation blocks until released
    assert ask(app)[1] == "answer 1"  # stale: served at once, while the next one is being computed
    wait_for(lambda: inner.calls == 2, 5, "the refresh to start")
    assert ask(app)[1] == "answer 1"  # still computing: still the stale one, no second computation
    inner.release.set()
    wait_for(lambda: ask(app)[1] == "answer 2", 5, "the refreshed answer")
    assert inner.calls == 2


def test_an_old_answer_is_not_served_stale_the_request_waits_for_a_new_one():
    now = [0.0]
    inner = Counted()
    app = SharedAnswers(inner, seconds=2, clock=lambda: now[0])
    assert ask(app)[1] == "answer 1"
    now[0] = 2 * 4 - 0.1  # stale, but recent (STALE_FOR = 4 intervals): served while refreshed
    assert ask(app)[1] == "answer 1"
    wait_for(lambda: inner.calls == 2 and not app.slots[next(iter(app.slots))].computing, 5, "the refresh")
    now[0] = 100.0  # nobody asked for a long time: this request waits for a new answer
    assert ask(app)[1] == "answer 3" and inner.calls == 3


def test_an_inner_failure_reaches_its_request_and_the_waiting_ones_are_computed_afresh():
    inner = Counted(fail_first=True)
    inner.release.clear()
    app = SharedAnswers(inner, seconds=10)
    outcomes = []

    def request():
        try:
            outcomes.append(ask(app)[1])
        except RuntimeError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: inner.calls == 1, 5, "the first computation")
    inner.release.set()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a waiting request hung"
    assert sorted(outcomes) == ["answer 2", "answer 2", "answer 2", "inner failure 1"]
    assert inner.calls == 2


def test_an_answer_over_the_size_limit_is_not_kept(monkeypatch):
    from app import tensorboard_server

    monkeypatch.setattr(tensorboard_server, "LARGEST", len("answer 1") - 1)
    inner = Counted()
    app = SharedAnswers(inner, seconds=60)
    assert [ask(app)[1] for _ in range(3)] == ["answer 1", "answer 2", "answer 3"]
    assert app.kept == 0


def test_only_successful_answers_of_data_requests_are_shared():
    failing = Counted(status="500 Internal Server Error")
    app = SharedAnswers(failing, seconds=10)
    assert [ask(app) for _ in range(2)] == [("500 Internal Server Error", "answer 1"),
                                           ("500 Internal Server Error", "answer 2")]
    pages = Counted()
    app = SharedAnswers(pages, seconds=10)
    for path in ("/index.html", "/data/plugin/images/individualImage", "/data/plugin/histograms/histograms"):
        assert ask(app, path=path, method="GET")[1] != ask(app, path=path, method="GET")[1]


def test_runs_starting_together_write_the_log_folders_experiment_once_and_replace_an_older_one(tmp_path):
    from tensorboard.compat.proto import event_pb2

    from app.tabs import hparams
    from app.tabs.events import records

    # An older version's columns, in its run and where versions before 0.5 wrote them.
    (tmp_path / "_hparams").mkdir()
    older = [tmp_path / "_hparams" / "events.out.tfevents.0.experiment-0123456789ab.v2",
             tmp_path / "events.out.tfevents.0.experiment-ba9876543210.v2"]
    for path in older:
        path.write_bytes(b"")
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
    assert experiment.parent == tmp_path / "_hparams"
    # The older ones gone, nothing half-written left.
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "_hparams", experiment]
    events = [event_pb2.Event.FromString(r) for r in records(experiment)]
    assert events[0].file_version == "brain.Event:2"
    assert [v.tag for v in events[1].summary.value] == ["_hparams_/experiment"]


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
