"""A sweep's study in PostgreSQL, for sweepers on several hosts: the connection, the claim lock, and
which sweepers are alive, by Optuna's own heartbeat.

With `storage: postgresql://USER@HOST/DB` (or --storage) the study lives in Optuna's RDBStorage, and
the sweepers may run on any hosts that reach the database and share the log folder (the runs and
their checkpoints). flock cannot tell across hosts whether a sweeper lives, so each sweeper beats for
the trial it runs (RDBStorage.record_heartbeat, every `heartbeat.interval` seconds, from a thread),
and a RUNNING trial whose last beat is older than `heartbeat.grace_period` (the database's clock on
both sides) is an orphan, taken over as the same trial, as on one host (study.next_trial). Optuna
itself beats and reaps only inside study.optimize(), which marks a stale trial FAIL and retries its
parameters as a new trial (RetryHeartbeatStaleTrialCallback): a second trial number for one run
folder, and a failed trial counted among the finished. A sweeper asks and tells, so it beats and
reaps itself, and continues the trial it found.

One sweeper at a time claims a trial: under a PostgreSQL advisory lock (held by a transaction, so
it goes with the connection of a sweeper killed while holding it). A claim ends with the trial's
owner and a fresh beat written, so no other sweeper sees it dead; a RUNNING trial without any beat
is one whose claimant died before its first beat (seen only under the lock: every claim beats
before it lets go). A sweeper whose beats stopped for longer than the grace period (a machine
frozen, a network cut) may find on its return that its trial was taken over: it checks that it
still owns the trial before each epoch and before it reports one, and leaves the trial when not.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import socket
import threading
import uuid
import warnings
from collections.abc import Iterable

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from app.sweep import leases
from app.sweep.spec import PASSWORD_PLACES, Heartbeat, Sweep, SweepError, Unreachable, shown_url

PASSWORD_FILE = "SWEEP_DB_PASSWORD_FILE"  # a file holding the password alone (a compose secret)
MAX_PASSWORD_BYTES = 4096
# A claim waits this long at most for another sweeper's claim (a few queries), then says so.
CLAIM_TIMEOUT_MS = 120_000
# Optuna's tables as its RDBStorage 5.0 makes them (and Trial._trial_id below). BORROWED: app/borrowed.py
# checks them.
_DEAD = sqlalchemy.text(
    "SELECT t.number FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
    "WHERE t.study_id = :study AND t.state = 'RUNNING' "
    "AND (h.heartbeat IS NULL OR LOCALTIMESTAMP - h.heartbeat > make_interval(secs => :grace))")


def connect_args() -> dict:
    """What psycopg gets besides the URL: the password from SWEEP_DB_PASSWORD_FILE, if set.

    Otherwise libpq finds one itself, in PGPASSWORD or PGPASSFILE (default ~/.pgpass). Keepalives:
    a sweeper on a host that vanished holds no claim lock for longer than about a minute. UTC: Optuna
    keeps heartbeats as timestamps without a zone, written and compared in the session's time zone,
    which a PGTZ on one host would shift by hours.
    """
    args = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
            "connect_timeout": 10, "application_name": "app.sweep", "options": "-c timezone=UTC"}
    path = os.environ.get(PASSWORD_FILE)
    if path:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_PASSWORD_BYTES + 1)
            password = raw.decode().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise SweepError(f"{PASSWORD_FILE}={path}: cannot read it ({getattr(e, 'strerror', None) or e}); "
                             "it should hold the database's password alone") from None
        if not password or len(raw) > MAX_PASSWORD_BYTES or "\n" in password:
            raise SweepError(f"{PASSWORD_FILE}={path}: should hold the database's password alone, on one "
                             "line")
        args["password"] = password
    return args


@functools.cache
def storage(url: str, heartbeat: Heartbeat) -> RDBStorage:
    """Optuna's RDBStorage on `url` (one per process), its tables made when missing.

    Raises Unreachable when the database cannot be reached, with libpq's reason.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        with reached(url), _locked(_engine(url), "app.sweep tables"):
            # Two sweepers making the tables of a new database at once would collide (CREATE TABLE
            # is not idempotent under concurrency): one at a time, under the lock.
            return _Storage(url, engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args()},
                              heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace_period)


def check_reachable(url: str) -> None:
    """Connect once, so that a wrong host or password is one line before anything is written."""
    try:
        import psycopg  # noqa: F401 (SQLAlchemy 2.1's driver for postgresql://)
    except ImportError:
        raise SweepError("a PostgreSQL storage needs the psycopg package, which this Python lacks: "
                         "pip install 'psycopg[binary]' (requirements.txt has it)") from None
    with reached(url), _engine(url).connect():
        pass


@functools.cache
def _engine(url: str) -> sqlalchemy.Engine:
    """A connection pool of this sweeper's own, for the claim lock (Optuna's sessions commit often)."""
    return sqlalchemy.create_engine(url, pool_pre_ping=True, connect_args=connect_args())


@contextlib.contextmanager
def reached(url: str):
    """Turn the database's failures within the block into one line (Unreachable, exit status 1)."""
    try:
        yield
    except sqlalchemy.exc.OperationalError as e:  # psycopg's, wrapped: libpq's reason in its message
        reason = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        raise Unreachable(f"cannot reach the sweep's database {shown_url(url)} ({reason}); check the URL, "
                          f"that the server runs, and the password ({PASSWORD_PLACES})") from None
    except optuna.exceptions.StorageInternalError as e:
        cause = e.__cause__ or e
        reason = " ".join(str(cause).split())[:300]
        raise Unreachable(f"the sweep's database {shown_url(url)} failed ({reason}); run the same "
                          "command again once it is back: an interrupted trial continues from its last "
                          "epoch") from None


@contextlib.contextmanager
def claiming(sweep: Sweep):
    """One sweeper at a time, on any host, opens the study, or picks, adopts or asks for a trial."""
    with _uninterrupted(), reached(sweep.storage):
        with _locked(_engine(sweep.storage), f"app.sweep {sweep.name}"):
            yield


@contextlib.contextmanager
def _uninterrupted():
    """Hold back Ctrl-C and SIGTERM until the block is done, then act on them as before.

    The sweeper turns them into an exception raised wherever Python is (train.signals_raise_interrupted);
    raised inside SQLAlchemy's commit it leaves the session unusable ("This session is in 'committed'
    state"), which hides the stop and fails the sweeper's last writes (giving up its trial, summary.json).
    A database call takes milliseconds. Python runs handlers in the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if held:
            handler = previous[held[0]]
            if callable(handler):
                handler(held[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(held[0])


class _Storage(RDBStorage):
    """Optuna's RDBStorage, each of whose calls completes before a signal is acted on (_uninterrupted)."""


def _whole(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        with _uninterrupted():
            return method(*args, **kwargs)
    return call


for _name in dir(RDBStorage):
    if not _name.startswith("_") and inspect.isfunction(inspect.getattr_static(RDBStorage, _name)):
        setattr(_Storage, _name, _whole(getattr(RDBStorage, _name)))


@contextlib.contextmanager
def _locked(engine: sqlalchemy.Engine, key: str):
    """Hold PostgreSQL's advisory lock `key` for the block; the server drops it with the connection."""
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = {CLAIM_TIMEOUT_MS}"))
        connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
        yield


class Heartbeats:
    """This sweeper among those sharing a study in PostgreSQL: leases.Sweeper's part, by heartbeat."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.storage = storage(sweep.storage, sweep.heartbeat)
        self.study_id = self.storage.get_study_id_from_name(sweep.name)
        self.engine = _engine(sweep.storage)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.closed = False
        self._trial: FrozenTrial | None = None  # the trial it beats for
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def claiming(self):
        """The claim lock, also held while summary.json is written."""
        return claiming(self.sweep)

    def dead(self, trials: Iterable[FrozenTrial]) -> set[int]:
        """The numbers of the RUNNING trials whose sweeper is dead: no beat within the grace period,
        none at all, or given up (a sweeper stopped by a signal gives its trial up on its way out)."""
        with _uninterrupted(), reached(self.sweep.storage), self.engine.connect() as connection:
            stale = set(connection.execute(_DEAD, {"study": self.study_id,
                                                   "grace": self.sweep.heartbeat.grace_period}).scalars())
        released = {t.number for t in trials if t.state == TrialState.RUNNING and (
            t.user_attrs.get(leases.OWNER) in ("", None) or (t.user_attrs.get(leases.OWNER) == self.id
                                                             and self.closed))}
        return stale | released

    def take(self, trial: optuna.Trial) -> None:
        """Own `trial` (under the claim lock): its owner and a fresh beat, so no one else takes it."""
        trial.set_user_attr(leases.OWNER, self.id)
        self.storage.record_heartbeat(trial._trial_id)

    def owns(self, trial: optuna.Trial) -> bool:
        """Whether `trial` is still this sweeper's: not taken over while its beats were held up. The
        database away for a moment: yes (the trial goes on; what it must write waits for the database)."""
        try:
            frozen = self.storage.get_trial(trial._trial_id)
        except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError):
            return True
        return frozen.state == TrialState.RUNNING and frozen.user_attrs.get(leases.OWNER) == self.id

    @contextlib.contextmanager
    def beating(self, trial: optuna.Trial):
        """Beat for `trial` while the block runs (a thread: it goes on while TensorFlow trains)."""
        self._trial = self.storage.get_trial(trial._trial_id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="sweep-heartbeat", daemon=True)
        self._thread.start()
        try:
            yield
        except BaseException:
            self._stop_beating()  # keeps self._trial: close() gives it up
            raise
        self._stop_beating()
        self._trial = None

    def _beat(self) -> None:
        trial_id = self._trial._trial_id
        while not self._stop.wait(self.sweep.heartbeat.interval):
            try:
                frozen = self.storage.get_trial(trial_id)
                if frozen.state != TrialState.RUNNING or frozen.user_attrs.get(leases.OWNER) != self.id:
                    return  # told, or taken over: the trainer finds out before its next epoch
                self.storage.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001 (the database away for a moment: beat again next time)
                continue

    def _stop_beating(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Stop beating and give up the trial left unfinished, so that the next sweeper takes it at once."""
        self.closed = True
        self._stop_beating()
        trial, self._trial = self._trial, None
        if trial is None:
            return
        with contextlib.suppress(Exception):  # the database away: the trial goes stale instead
            frozen = self.storage.get_trial(trial._trial_id)
            if frozen.state == TrialState.RUNNING and frozen.user_attrs.get(leases.OWNER) == self.id:
                self.storage.set_trial_user_attr(trial._trial_id, leases.OWNER, "")
