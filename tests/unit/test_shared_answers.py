"""TensorBoard with many runs: the shared answers of app/tensorboard_server.py, and the log folder's
experiment. A real TensorBoard over HTTP: tests/integration/test_tensorboard_live.py."""

from __future__ import annotations

import contextlib
import gc
import gzip
import http.client
import threading
import time
import tracemalloc

import pytest
from helpers import wait_for

from app import tensorboard_server
from app.tensorboard_server import SharedAnswers
from tools.tensorboard_bench import first_line  # the bench's client, which sends while it reads

RUNS_TABLE = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
              "colParams": [], "startIndex": 0, "sliceSize": 1000}


class Counted:
    """A WSGI app that answers how many answers it has computed; each waits for `release` (set
    unless a test clears it), with fail_first the first one raises, and call number `hang` hangs
    until `hung` is set (at the test's end)."""

    def __init__(self, seconds: float = 0.0, status: str = "200 OK", fail_first: bool = False,
                 hang: int | None = None):
        self.seconds, self.status, self.fail_first, self.hang = seconds, status, fail_first, hang
        self.calls, self.bodies = 0, []
        self.release, self.hung = threading.Event(), threading.Event()
        self.release.set()

    def __call__(self, environ, start_response):
        self.calls += 1
        calls = self.calls
        self.bodies.append(environ["wsgi.input"].read())
        time.sleep(self.seconds)
        self.release.wait(timeout=10)
        if calls == self.hang:
            self.hung.wait(timeout=60)
        if self.fail_first and calls == 1:
            raise RuntimeError(f"inner failure {calls}")
        start_response(self.status, [("Content-Type", "text/plain")])
        return [f"answer {calls}".encode()]


def ask(app, path: str = "/data/plugin/hparams/session_groups", body: bytes = b"{}", method: str = "POST",
        query: str = "", **headers: str):
    """One request to `app` as a WSGI call, without a server; `headers` as HTTP_... keys."""
    import io

    started = {}
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
               "HTTP_ACCEPT_ENCODING": "gzip", **headers}
    answer = b"".join(app(environ, lambda status, headers: started.update(status=status)))
    return started["status"], answer.decode(errors="replace")


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
    wait_for(lambda: inner.calls == 2 and next(iter(app.slots.values())).computing is None, 5, "the refresh")
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
    monkeypatch.setattr(tensorboard_server, "LARGEST", len("answer 1") - 1)
    inner = Counted()
    app = SharedAnswers(inner, seconds=60)
    assert [ask(app)[1] for _ in range(3)] == ["answer 1", "answer 2", "answer 3"]
    assert app.kept == 0 and not app.slots


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
    inner = Counted()
    app = SharedAnswers(inner, seconds=60)
    ask(app, body=b"0")
    monkeypatch.setattr(tensorboard_server, "BUDGET", 3 * app.kept)  # three entries like this one
    for n in range(1, 4):  # four distinct requests: the first one asked no longer fits
        ask(app, body=str(n).encode())
    assert app.kept <= tensorboard_server.BUDGET and len(app.slots) == 3
    assert ask(app, body=b"3")[1] == "answer 4"  # remembered
    assert ask(app, body=b"0")[1] == "answer 5"  # forgotten: computed again


# --- through a real server: werkzeug's threaded server, the one TensorBoard's WerkzeugServer is ---------

@contextlib.contextmanager
def served(app):
    """`app` behind werkzeug's threaded WSGI server on a free port, in this process."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def request(port: int, method: str, path: str, body=None, headers: dict | None = None, chunked=False):
    """(status, headers, body) of one HTTP request; `body` an iterable of chunks with `chunked`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def tensorboard_like(environ, start_response):
    """An answer made by TensorBoard's own http_util.Respond (its gzip rule, its headers): the
    request's body and query string echoed as text."""
    from tensorboard.backend import http_util
    from werkzeug import Request

    r = Request(environ)
    text = f"{r.query_string.decode()}:{r.get_data(as_text=True)}"
    return http_util.Respond(r, text, "text/plain")(environ, start_response)


# Finding: memory had no real bound.

def test_distinct_query_strings_make_at_most_max_entries_and_every_entry_is_counted():
    app = SharedAnswers(Counted(), seconds=60)
    for n in range(tensorboard_server.MAX_ENTRIES + 1001):
        ask(app, path="/data/runs", method="GET", query=f"n={n}", body=b"")
    assert len(app.slots) == tensorboard_server.MAX_ENTRIES
    # Each entry counts what it costs beyond its answer's bytes (its key, its objects).
    assert app.kept >= len(app.slots) * tensorboard_server.ENTRY_COST
    assert app.kept <= tensorboard_server.BUDGET


def test_requests_that_differ_in_what_tensorboard_reads_of_them_are_not_shared():
    """Besides path, query and body: the content type, client feature flags and experiment id
    headers that TensorBoard's middlewares read, and whether it gzips."""
    inner = Counted()
    app = SharedAnswers(inner, seconds=60)
    variants = [{}, {"CONTENT_TYPE": "application/json"}, {"HTTP_X_TENSORBOARD_FEATURE_FLAGS": '{"a": 1}'},
                {"HTTP_TENSORBOARD_EXPERIMENT_ID": "e2"}, {"HTTP_ACCEPT_ENCODING": ""}]
    assert [ask(app, **v)[1] for v in variants] == [f"answer {n}" for n in range(1, 6)]
    assert [ask(app, **v)[1] for v in variants] == [f"answer {n}" for n in range(1, 6)]  # each shared


def test_error_answers_and_answers_over_the_size_limit_leave_no_entry(monkeypatch):
    monkeypatch.setattr(tensorboard_server, "LARGEST", len("answer 1") - 1)
    for inner in (Counted(status="500 Internal Server Error"), Counted(status="404 Not Found"), Counted()):
        app = SharedAnswers(inner, seconds=60)
        for n in range(100):
            ask(app, query=f"n={n}")
        assert inner.calls == 100 and not app.slots and app.kept == 0


def test_what_is_counted_covers_what_the_entries_really_take_long_keys_included():
    """tracemalloc's count of what the entries hold, against the middleware's own count: the key of a
    request with a long query string and body costs no more than any other."""
    app = SharedAnswers(tensorboard_like, seconds=60)
    ask(app, path="/data/runs", method="GET", body=b"")  # imports and first-time allocations done
    gc.collect()
    tracemalloc.start()
    try:
        before, kept = tracemalloc.get_traced_memory()[0], app.kept
        for n in range(1000):
            ask(app, query=f"n={n}&" + "x" * 4000, body=b'{"sliceSize": 5, "n": %d}' % n + b" " * 4000,
                HTTP_ACCEPT_ENCODING="gzip" if n % 2 else "")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(app.slots) == 1001
    counted = app.kept - kept
    assert grown <= counted, f"{grown / 1000:.0f} bytes an entry, {counted / 1000:.0f} counted"


def test_a_body_over_the_cap_is_answered_413_without_being_read():
    inner = Counted()
    with served(SharedAnswers(inner, seconds=60)) as port:
        big = tensorboard_server.MAX_BODY + 1
        started = time.monotonic()
        # Announced (5 MB, of which the server reads nothing) and chunked (read up to the cap).
        head = b"POST /data/plugin/hparams/session_groups HTTP/1.1\r\nHost: x\r\nContent-Length: 5242880"
        assert first_line(port, head, b"x" * (5 << 20), timeout=5) == "HTTP/1.1 413 Request Entity Too Large"
        status, _, _ = request(port, "POST", "/data/plugin/hparams/session_groups",
                               body=iter([b"x" * 65536] * (big // 65536 + 1)), chunked=True)
        assert status == 413
        assert time.monotonic() - started < 5 and inner.calls == 0
        # At the cap: answered.
        assert request(port, "POST", "/data/plugin/hparams/session_groups", body=b"x" * (big - 1))[0] == 200


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3"])
def test_a_negative_or_malformed_content_length_is_refused_not_read_to_the_end(length):
    inner = Counted()
    with served(SharedAnswers(inner, seconds=60)) as port:
        head = b"POST /data/plugin/hparams/session_groups HTTP/1.1\r\nHost: x\r\nContent-Length: " + length
        assert first_line(port, head, b"{}", timeout=5) == "HTTP/1.1 400 Bad Request"
        assert inner.calls == 0


# Finding: a stale answer was served forever.

def test_a_backend_that_hangs_is_seen_after_the_stale_window(monkeypatch):
    """Its stuck computation is waited for up to HUNG_AFTER, then a request computes afresh: what
    the real server would do."""
    monkeypatch.setattr(tensorboard_server, "HUNG_AFTER", 1.0)
    inner = Counted(hang=2)
    app = SharedAnswers(inner, seconds=0.05)
    try:
        assert ask(app)[1] == "answer 1"
        time.sleep(0.06)
        assert ask(app)[1] == "answer 1"  # stale, while call 2 hangs
        wait_for(lambda: inner.calls == 2, 5, "the refresh to start")
        time.sleep(tensorboard_server.STALE_FOR * 0.05)
        outcome = []
        waiting = threading.Thread(target=lambda: outcome.append(ask(app)[1]), daemon=True)
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and not outcome  # not the old answer: it waits
        waiting.join(timeout=5)
        assert outcome == ["answer 3"]  # the hung computation given up: a new one
    finally:
        inner.hung.set()


def test_a_backend_that_switched_to_errors_is_seen_after_the_stale_window():
    now = [0.0]
    inner = Counted()
    app = SharedAnswers(inner, seconds=2, clock=lambda: now[0])
    assert ask(app) == ("200 OK", "answer 1")
    inner.status = "500 Internal Server Error"
    now[0] = 2.1
    assert ask(app) == ("200 OK", "answer 1")  # stale, while the next is computed
    wait_for(lambda: inner.calls == 2 and next(iter(app.slots.values())).computing is None, 5, "the refresh")
    now[0] = 2 * tensorboard_server.STALE_FOR + 0.1
    assert ask(app) == ("500 Internal Server Error", "answer 3")


def test_a_request_that_says_no_cache_reaches_the_real_server():
    """What the probes send (Cache-Control: no-cache, as RFC 9111 has it): never a shared answer."""
    inner = Counted()
    app = SharedAnswers(inner, seconds=60)
    assert ask(app, path="/data/runs", method="GET")[1] == "answer 1"
    assert ask(app, path="/data/runs", method="GET", HTTP_CACHE_CONTROL="no-cache")[1] == "answer 2"
    assert ask(app, path="/data/runs", method="GET", HTTP_PRAGMA="no-cache")[1] == "answer 3"
    assert ask(app, path="/data/runs", method="GET")[1] == "answer 1"
    inner.status = "500 Internal Server Error"
    assert ask(app, path="/data/runs", method="GET", HTTP_CACHE_CONTROL="max-age=0, no-cache") == \
        ("500 Internal Server Error", "answer 4")


def test_identical_requests_arriving_together_share_an_error_answer_but_it_is_not_kept():
    inner = Counted(seconds=0.3, status="500 Internal Server Error")
    app = SharedAnswers(inner, seconds=60)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(ask(app))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [("500 Internal Server Error", "answer 1")] * 4
    assert ask(app) == ("500 Internal Server Error", "answer 2") and not app.slots


# Finding: gzip by a substring test; chunked bodies taken as empty.

def test_gzip_follows_tensorboards_own_rule():
    with served(SharedAnswers(tensorboard_like, seconds=60)) as port:
        def encoding(accept: str) -> str | None:
            status, headers, body = request(port, "GET", "/data/runs", headers={"Accept-Encoding": accept})
            assert status == 200
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            assert body == b":"
            return headers.get("Content-Encoding")

        # TensorBoard gzips for "*" and refuses "gzip;q=0": each gets what TensorBoard would send it.
        assert [encoding(a) for a in ("*", "identity", "gzip;q=0", "gzip", "deflate, gzip", "x-gzip")] == \
            ["gzip", None, None, "gzip", "gzip", "gzip"]


def test_a_chunked_body_is_read():
    inner = Counted()
    with served(SharedAnswers(inner, seconds=60)) as port:
        for body in (b'{"sliceSize": 5}', b'{"sliceSize": 6}'):
            status, _, _ = request(port, "POST", "/data/plugin/hparams/session_groups",
                                   body=iter([body[:5], body[5:]]), chunked=True)
            assert status == 200
        assert inner.bodies == [b'{"sliceSize": 5}', b'{"sliceSize": 6}']


def test_compose_healthcheck_sees_a_failing_tensorboard_even_when_its_answer_is_kept():
    """The tensorboard service's own healthcheck command (docker-compose.yml), run against a warm
    server whose backend then fails: it must fail too, or Docker would keep a broken TensorBoard."""
    import subprocess
    import sys

    import yaml
    from helpers import ROOT

    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["tensorboard"]
    test = command["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python3", "-c"] and "127.0.0.1:6006" in test[3]
    status = ["200 OK"]

    def tensorboard(environ, start_response):
        start_response(status[0], [("Content-Type", "application/json")])
        return [b"[]"]

    with served(SharedAnswers(tensorboard, seconds=60)) as port:
        check = [sys.executable, "-c", test[3].replace("127.0.0.1:6006", f"127.0.0.1:{port}")]
        assert request(port, "GET", "/data/runs")[0] == 200  # what a browser left kept
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
        status[0] = "500 Internal Server Error"
        assert request(port, "GET", "/data/runs")[0] == 200  # a browser still gets the kept answer
        failed = subprocess.run(check, capture_output=True, text=True, timeout=30)
        assert failed.returncode != 0 and "HTTP Error 500" in failed.stderr
