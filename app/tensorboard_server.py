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
  once (an error answer too, but it is not kept). So what a user sees is at most STALE_FOR reload
  intervals old, and a backend that fails or hangs is seen after that. A request that says
  `Cache-Control: no-cache` (or `Pragma: no-cache`) is never answered from what is kept: that is
  for the health probes, which must see the real server.
- Small answers are not held back: Nagle's algorithm is off on its connections, which otherwise
  delays an answer written in two parts by 40 ms, the client's delayed acknowledgement.

What is kept is bounded, whatever clients send: at most MAX_ENTRIES answers, BUDGET bytes in all
(bodies, headers and ENTRY_COST for each entry's own objects and key, a digest of the request), only
answers "200" of up to LARGEST bytes, and each only while it can still be served (STALE_FOR
intervals). A shared request's body is read up to MAX_BODY; a larger one is answered 413 unread.
`make bench-tensorboard-memory` measures the process under 20,000 distinct requests (docs/speed.md).
"""

from __future__ import annotations

import collections
import hashlib
import io
import socket
import sys
import threading
import time

# BORROWED: http_util._ALLOWS_GZIP_PATTERN, TensorBoard's own rule for gzipping an answer (app/borrowed.py).
from tensorboard.backend import http_util

# Data requests that are pure reads of the logs, and worth sharing: the ones whose cost grows with
# the number of runs. Image and histogram data are left out: big, and asked for one run at a time.
SHARED = ("/data/runs", "/data/environment", "/data/plugins_listing", "/data/plugin/hparams/",
          "/data/plugin/scalars/", "/data/plugin/timeseries/tags", "/data/plugin/histograms/tags",
          "/data/plugin/distributions/tags", "/data/plugin/images/tags", "/data/plugin/pr_curves/tags",
          "/data/plugin/text/tags")
# What is kept, and why these bounds (docs/speed.md has them too):
# - at most MAX_ENTRIES distinct requests: a page load of the Scalars and HParams tabs makes about
#   seven, the Scalars tab one per tag, so thousands serve many users of hundreds of runs; every
#   distinct query string or body is a request of its own, so without a count they pile up.
MAX_ENTRIES = 4096
# - at most BUDGET bytes in all, the least recently asked for going first: TensorBoard itself takes
#   about 530 MB with TensorFlow imported; its memory limit in compose and Kubernetes is 2 GiB.
BUDGET = 256 << 20
# - each entry counted as its answer's body and headers plus ENTRY_COST: its key (a 32-byte digest of
#   the request, however long its query string and body), its slot, answer and header objects, which
#   tracemalloc measured at 800 bytes with TensorBoard's headers (tests/unit/test_shared_answers.py).
ENTRY_COST = 1024
LARGEST = 16 << 20  # a bigger answer is not kept (16 of them would fill BUDGET)
# - a shared request's body up to MAX_BODY, else 413 unread: the largest the frontend sends is
#   scalars_multirun's list of runs, some 40 bytes a run (25,000 runs in 1 MiB).
MAX_BODY = 1 << 20
STALE_FOR = 4  # a stale answer is served, while the next is computed, up to this many --reload_interval
# A computation running longer than this is taken for hung: a request then computes afresh, as the
# real server would, rather than wait on it. The slowest answer measured (make bench-tensorboard, 50
# users of the plain tensorboard) took 16 s.
HUNG_AFTER = 60.0
# Request headers an answer depends on besides its path, query and body: the content type,
# TensorBoard's client feature flags (client_feature_flags.py) and its experiment id (experiment_id.py).
VARY = ("CONTENT_TYPE", "HTTP_X_TENSORBOARD_FEATURE_FLAGS", "HTTP_TENSORBOARD_EXPERIMENT_ID")


class _Answer:
    __slots__ = ("status", "headers", "body", "at", "size")

    def __init__(self, status: str, headers: list, body: bytes, at: float):
        self.status, self.headers, self.body, self.at = status, headers, body, at
        self.size = len(body) + sum(len(k) + len(v) for k, v in headers)  # counted with ENTRY_COST


class _Computing:
    """One computation of an answer: when it started, and its answer for the requests waiting on it."""

    __slots__ = ("started", "answer", "done")

    def __init__(self, started: float):
        self.started, self.answer, self.done = started, None, threading.Event()


class _Slot:
    """One distinct request: its last answer, and the computation of the next one, if any."""

    __slots__ = ("answer", "computing")

    def __init__(self):
        self.answer: _Answer | None = None
        self.computing: _Computing | None = None


class SharedAnswers:
    """WSGI middleware: one computation of a data request per `seconds` (see the module docstring)."""

    def __init__(self, app, seconds: float, clock=time.monotonic):
        self.app, self.seconds, self.clock = app, seconds, clock
        self.slots: collections.OrderedDict[bytes, _Slot] = collections.OrderedDict()
        self.lock = threading.Lock()  # guards slots, kept and every slot's fields
        self.kept = 0  # bytes counted for the slots (ENTRY_COST each, and their answers' size)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        shown = path.split("/", 3)[3:] if path.startswith("/experiment/") else None
        route = "/" + shown[0] if shown else path
        if (environ.get("REQUEST_METHOD") not in ("GET", "POST") or not route.startswith(SHARED)
                or _no_cache(environ)):
            return self.app(environ, start_response)
        body, refused = _body(environ)
        if refused:
            start_response(refused, [("Content-Type", "text/plain"), ("Content-Length", str(len(refused))),
                                     ("Connection", "close")])  # what was not read is not a next request
            return [refused.encode()]
        gzipped = bool(http_util._ALLOWS_GZIP_PATTERN.search(environ.get("HTTP_ACCEPT_ENCODING", "")))
        request = (environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING", ""), gzipped,
                   *(environ.get(name, "") for name in VARY))
        key = hashlib.sha256(repr(request).encode() + b"\0" + body).digest()
        answer = self._answer(key, environ, body)
        start_response(answer.status, answer.headers)
        return [answer.body]

    def _answer(self, key: bytes, environ, body: bytes) -> _Answer:
        while True:
            with self.lock:
                now = self.clock()
                slot = self._slot(key, now)
                answer = slot.answer
                age = now - answer.at if answer else None
                if answer and age < self.seconds:
                    return answer
                # A stale answer serves only while it is recent: an old one (nobody asked for a
                # while, or the backend fails or hangs) would show what was long ago, so that
                # request waits for a new one.
                recent = answer if answer and age < STALE_FOR * self.seconds else None
                computing = slot.computing
                mine = computing is None or now - computing.started >= HUNG_AFTER  # none, or hung
                if mine:
                    computing = slot.computing = _Computing(now)
                if recent and mine:  # this request gets it at once, a thread computes the next
                    threading.Thread(target=self._compute, args=(key, slot, computing, dict(environ), body),
                                     daemon=True).start()
                if recent:  # also while its successor is on the way
                    return recent
            if mine:
                return self._compute(key, slot, computing, environ, body)
            # An answer is being computed: it is this request's too, unless it fails or hangs.
            computing.done.wait(timeout=max(0.0, computing.started + HUNG_AFTER - now))
            if computing.answer:
                return computing.answer

    def _slot(self, key: bytes, now: float) -> _Slot:
        """Called with the lock held: the slot of `key`, made the most recently used."""
        slot = self.slots.pop(key, None)
        if slot is None:
            self._evict(now, entries=1, size=ENTRY_COST)  # room for a new one
            slot = _Slot()
            self.kept += ENTRY_COST
        self.slots[key] = slot
        return slot

    def _evict(self, now: float, entries: int = 0, size: int = 0) -> None:
        """Called with the lock held: within the bounds with room for `entries` more of `size` bytes,
        and nothing kept that can no longer be served."""
        while self.slots:
            key, oldest = next(iter(self.slots.items()))
            useless = oldest.computing is None and (
                oldest.answer is None or now - oldest.answer.at >= STALE_FOR * self.seconds)
            if not (useless or self.kept + size > BUDGET or len(self.slots) + entries > MAX_ENTRIES):
                return
            self._forget(key, oldest)

    def _forget(self, key: bytes, slot: _Slot) -> None:
        """Called with the lock held. A computation of a forgotten slot still answers its waiters."""
        del self.slots[key]
        self.kept -= ENTRY_COST + (slot.answer.size if slot.answer else 0)

    def _compute(self, key: bytes, slot: _Slot, computing: _Computing, environ, body: bytes) -> _Answer:
        answer = None
        try:
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
            answer = _call(self.app, environ, computing.started)
        finally:
            with self.lock:
                computing.answer = answer
                if slot.computing is computing:
                    slot.computing = None
                remembered = self.slots.get(key) is slot
                if (answer and answer.status.startswith("200") and len(answer.body) <= LARGEST
                        and (slot.answer is None or slot.answer.at <= answer.at)):
                    if remembered:  # counted only while remembered
                        self.kept += answer.size - (slot.answer.size if slot.answer else 0)
                    slot.answer = answer
                    self._evict(self.clock())
                elif remembered and slot.answer is None and slot.computing is None:
                    self._forget(key, slot)  # an error or a big answer: nothing to keep
            computing.done.set()
        return answer


def _no_cache(environ) -> bool:
    """Whether the request asks for an answer from the real server (RFC 9111: Cache-Control no-cache)."""
    directives = f"{environ.get('HTTP_CACHE_CONTROL', '')},{environ.get('HTTP_PRAGMA', '')}".lower()
    return any(d.split("=", 1)[0].strip() == "no-cache" for d in directives.split(","))


def _body(environ) -> tuple[bytes, str | None]:
    """The request's body, read up to MAX_BODY, or the status to answer instead."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):  # chunked: the server decodes it and ends the stream
        wanted = MAX_BODY + 1
    else:
        length = environ.get("CONTENT_LENGTH") or "0"
        if not (length.isascii() and length.isdigit()):  # "-1" would read to the connection's end
            return b"", "400 Bad Request"
        wanted = int(length)
        if wanted > MAX_BODY:
            return b"", "413 Request Entity Too Large"
    parts, size = [], 0
    while size < wanted:
        part = stream.read(min(wanted - size, 1 << 16))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > MAX_BODY:
        return b"", "413 Request Entity Too Large"
    return b"".join(parts), None


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
