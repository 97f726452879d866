"""python -m app.tensorboard_server [tensorboard flags]: TensorBoard that answers many users of many runs.

The standard TensorBoard (tensorboard/main.py, which TensorBoard's docs invite to swap out: the same
plugins, flags and data server), with two changes to its web server, both measured with
`make bench-tensorboard` (docs/speed.md):

- Answers are shared. The HParams plugin recomputes every answer from every run, in Python threads
  that share one core's worth of interpreter; with 500 trials one such request takes a third of a
  second, and ten users at once queue behind each other. Here a data request that was answered in
  the last --reload_interval seconds gets that answer (TensorBoard rereads the logs only that often
  anyway), one answered up to STALE_FOR intervals ago gets it too while one thread computes the new
  one, an older one waits for the new one, and identical requests arriving together are computed
  once. So what a user sees is at most STALE_FOR reload intervals old.
- Small answers are not held back: Nagle's algorithm is off on its connections, which otherwise
  delays an answer written in two parts by 40 ms, the client's delayed acknowledgement.
"""

from __future__ import annotations

import collections
import io
import socket
import sys
import threading
import time

# Data requests that are pure reads of the logs, and worth sharing: the ones whose cost grows with
# the number of runs. Image and histogram data are left out: big, and asked for one run at a time.
SHARED = ("/data/runs", "/data/environment", "/data/plugins_listing", "/data/plugin/hparams/",
          "/data/plugin/scalars/", "/data/plugin/timeseries/tags", "/data/plugin/histograms/tags",
          "/data/plugin/distributions/tags", "/data/plugin/images/tags", "/data/plugin/pr_curves/tags",
          "/data/plugin/text/tags")
# What is remembered: answers up to this many bytes in all, the least recently asked for going first.
BUDGET = 256 << 20
LARGEST = 16 << 20  # a bigger answer is not kept
STALE_FOR = 4  # a stale answer is served, while the next is computed, up to this many --reload_interval


class _Answer:
    def __init__(self, status: str, headers: list, body: bytes, at: float):
        self.status, self.headers, self.body, self.at = status, headers, body, at


class _Slot:
    """One distinct request: its last answer, and whether a thread is computing the next one."""

    def __init__(self):
        self.answer: _Answer | None = None
        self.computing = False
        self.done = threading.Condition()


class SharedAnswers:
    """WSGI middleware: one computation of a data request per `seconds` (see the module docstring)."""

    def __init__(self, app, seconds: float, clock=time.monotonic):
        self.app, self.seconds, self.clock = app, seconds, clock
        self.slots: collections.OrderedDict[tuple, _Slot] = collections.OrderedDict()
        self.lock = threading.Lock()  # guards slots and kept
        self.kept = 0  # bytes of the answers in slots

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        shown = path.split("/", 3)[3:] if path.startswith("/experiment/") else None
        route = "/" + shown[0] if shown else path
        if environ.get("REQUEST_METHOD") not in ("GET", "POST") or not route.startswith(SHARED):
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        key = (environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING", ""), body,
               "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""), environ.get("CONTENT_TYPE", ""))
        answer = self._answer(key, environ, body)
        start_response(answer.status, answer.headers)
        return [answer.body]

    def _slot(self, key) -> _Slot:
        with self.lock:
            slot = self.slots.pop(key, None) or _Slot()
            self.slots[key] = slot  # the most recently used last
            return slot

    def _keep(self, key, slot: _Slot, answer: _Answer) -> None:
        """Called with slot.done held: `answer` replaces the slot's, within the budget."""
        with self.lock:
            if self.slots.get(key) is slot:  # counted only while remembered
                self.kept += len(answer.body) - (len(slot.answer.body) if slot.answer else 0)
            slot.answer = answer
            while self.kept > BUDGET and len(self.slots) > 1:
                _, oldest = self.slots.popitem(last=False)
                if oldest.answer:  # a slot being computed keeps its answer for its waiters
                    self.kept -= len(oldest.answer.body)

    def _answer(self, key, environ, body: bytes) -> _Answer:
        slot = self._slot(key)
        with slot.done:
            while True:
                answer = slot.answer
                age = self.clock() - answer.at if answer else None
                if answer and age < self.seconds:
                    return answer
                # A stale answer serves only while it is recent: an old one (nobody asked for a
                # while) would show what was long ago, so that request waits for a new one.
                recent = answer if answer and age < STALE_FOR * self.seconds else None
                if not slot.computing:
                    slot.computing = True
                    break
                if recent:  # its successor on the way: the recent one now
                    return recent
                slot.done.wait()  # an answer is being computed: wait for it
        if recent:  # this request gets it at once, a thread computes the next
            threading.Thread(target=self._compute, args=(key, slot, dict(environ), body), daemon=True).start()
            return recent
        return self._compute(key, slot, environ, body)

    def _compute(self, key, slot: _Slot, environ, body: bytes) -> _Answer:
        try:
            environ["wsgi.input"] = io.BytesIO(body)
            answer = _call(self.app, environ, self.clock())
        except BaseException:
            answer = None
            raise
        finally:
            with slot.done:
                slot.computing = False
                if answer and answer.status.startswith("200") and len(answer.body) <= LARGEST:
                    self._keep(key, slot, answer)
                slot.done.notify_all()
        return answer


def _call(app, environ, at: float) -> _Answer:
    started = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=status, headers=headers)

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return _Answer(started["status"], started["headers"], body, at)


def main() -> None:
    # BORROWED: main_lib.global_init and program.WerkzeugServer (app/borrowed.py).
    from absl import app
    from tensorboard import default, main_lib, program
    from tensorboard.plugins import base_plugin

    class Server(program.WerkzeugServer):
        def __init__(self, wsgi_app, flags):
            super().__init__(SharedAnswers(wsgi_app, flags.reload_interval), flags)

        def get_request(self):
            connection, address = super().get_request()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return connection, address

    # What tensorboard/main.py does, with this server.
    main_lib.global_init()
    tensorboard = program.TensorBoard(plugins=default.get_plugins(), server_class=Server)
    try:
        app.run(tensorboard.main, flags_parser=tensorboard.configure)
    except base_plugin.FlagsError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
