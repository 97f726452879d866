"""python -m tools.tensorboard_bench: how fast TensorBoard answers its users with 500 runs in its log folder.

Builds the log folder first: one real sweep trial of 10 epochs (python -m app.sweep on the test
data, tests/data/mnist-slice.npz), then --runs copies of its event files, each a trial of its own
(its HParams session renamed, its learning rate changed, so the HParams tab has a row per copy).
Starts the real TensorBoard the way docker-compose.yml's tensorboard service does (its entrypoint
and command, only the log folder and port replaced), waits until it lists every run, then for each
client count runs that many clients at once for --seconds. Each client, like a browser tab, loops
over the requests that TensorBoard 2.21's Scalars and HParams tabs make (REQUESTS below: their
paths and bodies, as its frontend sends them). Reported per request kind and client count: p50,
p95 and max latency, requests and errors. During the first loaded round one more run is copied in,
and the time until /data/runs lists it is reported.

With --memory (make bench-tensorboard-memory) it measures memory instead: the same TensorBoard
(--reload_interval 60, so that no answer ages out during the run: the worst case) on a small log
folder (three runs of scalars, written here), then --requests GETs of /data/runs, each
with a query string of its own (a request of its own to the shared answers), then a 5 MB body
announced and a 5 MB body chunked (both to be answered 413 unread); reported: the server's resident
memory (VmRSS) before, every tenth of the way and after, against the bound the shared answers state
(app/tensorboard_server.py: MAX_ENTRIES, BUDGET, ENTRY_COST). Exit 1 if it grew beyond it.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import yaml

from app.scale import hardware
from tools.common import free_port

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / "tests" / "data" / "mnist-slice.npz"
SWEEP = "tbbench"  # the copies are tbbench-trial-000 ... as a sweep's trials are named
HPARAMS_TAG = "_hparams_/session_start_info"
EXPERIMENT_TAG = "_hparams_/experiment"
DEFAULT_OUT = "artifacts/bench-tensorboard.json"
RELOAD_FOR_MEMORY = 60  # --memory's --reload_interval: all its requests fall within the stale window


# --- the log folder ---------------------------------------------------------------------------------

def train_source(work: Path, epochs: int) -> Path:
    """One real trial of a one-trial sweep; returns its run folder."""
    sweep_file = work / f"{SWEEP}.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": SWEEP, "trials": 1, "sampler": "random", "pruning": False,
        "parameters": {"learning_rate": {"low": 0.0005, "high": 0.005, "log": True}},
        "fixed": {"epochs": epochs}}))
    subprocess.run([sys.executable, "-m", "app.sweep", str(sweep_file), "--data", str(TEST_DATA),
                    "--log-dir", str(work / "source")], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return work / "source" / "fit" / f"{SWEEP}-trial-000"


def _renamed_session(record: bytes, name: str, rng: random.Random, experiment: bool) -> bytes | None:
    """The event again, or, if it starts an HParams session, that session as trial `name`; None to
    leave out an experiment (`experiment` False: runs as the project wrote them before it had one)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    event = event_pb2.Event.FromString(record)
    for value in event.summary.value:
        if value.tag == EXPERIMENT_TAG and not experiment:
            return None
        if value.tag == HPARAMS_TAG:
            content = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            content.session_start_info.group_name = name
            content.session_start_info.hparams["learning_rate"].number_value = 10 ** rng.uniform(-3.3, -2.3)
            value.metadata.plugin_data.content = content.SerializeToString()
    return event.SerializeToString()


def copy_run(source: Path, target: Path, rng: random.Random, experiment: bool = True) -> None:
    """The event files of run folder `source` as a new trial `target` (TensorBoard reads only those)."""
    from app.tabs.events import records, write_records

    for events in source.rglob("*tfevents*"):
        out = target / events.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(".partial")  # no "tfevents" in the name: TensorBoard skips it until renamed
        renamed = (_renamed_session(record, target.name, rng, experiment) for record in records(events))
        write_records(partial, (record for record in renamed if record is not None))
        partial.rename(out)


def build_logdir(source: Path, logdir: Path, runs: int, experiment: bool = True) -> None:
    from app.tabs.hparams import EXPERIMENT_RUN

    rng = random.Random(0)
    logdir.mkdir(parents=True)
    if experiment:  # the log folder's experiment, a run of its own
        shutil.copytree(source.parent / EXPERIMENT_RUN, logdir / EXPERIMENT_RUN)
    for n in range(runs):
        copy_run(source, logdir / f"{SWEEP}-trial-{n:03d}", rng, experiment)


# --- TensorBoard, as docker-compose.yml starts it ---------------------------------------------------

# The compose file's TensorBoard before this benchmark's findings: the tensorboard command itself.
BEFORE = ["tensorboard", "--logdir", "/logs/fit", "--bind_all", "--port", "6006", "--reload_interval", "2"]


def compose_command() -> list[str]:
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["tensorboard"]
    return [*service["entrypoint"], *service["command"]]


def local(command: list[str], logdir: Path, port: int) -> list[str]:
    """The container's command on this machine: this Python, this log folder, this port."""
    swapped = {"/logs/fit": str(logdir), "6006": str(port)}
    command = [swapped.get(word, word) for word in command]
    if command[0] == "tensorboard":
        return [str(Path(sys.executable).with_name("tensorboard")), *command[1:]]
    return [sys.executable, *command[1:]] if command[0].startswith("python") else command


# --- the clients -------------------------------------------------------------------------------------

class Client:
    """One browser tab's connection to TensorBoard."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: str | None = None, form: bool = False):
        headers = {"Accept-Encoding": "gzip"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            raise
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}")
        if response.getheader("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return json.loads(data) if data[:1] in b"[{" else data


def _hparams_tab(experiment: dict) -> str:
    """The session_groups request of the HParams tab (tf-hparams-query-pane.ts, TensorBoard 2.21)."""
    columns = [{"hparam": h["name"], "includeInResult": True} for h in experiment.get("hparamInfos", [])]
    columns += [{"metric": m["name"], "includeInResult": True} for m in experiment.get("metricInfos", [])]
    return json.dumps({"experimentName": "", "allowedStatuses": [
        "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": columns, "startIndex": 0, "sliceSize": 100})


def _runs_table(experiment: dict) -> str:
    """The session_groups request of the runs table beside every dashboard (hparams_data_source.ts)."""
    columns = [{"hparam": h["name"], "includeInResult": True} for h in experiment.get("hparamInfos", [])]
    return json.dumps({"experimentName": "defaultExperimentId", "allowedStatuses": [
        "STATUS_FAILURE", "STATUS_RUNNING", "STATUS_SUCCESS", "STATUS_UNKNOWN"],
        "colParams": columns, "startIndex": 0, "sliceSize": 1000000, "includeMetrics": False})


EXPERIMENT = "/experiment/defaultExperimentId"
VARIANTS = {
    "before": "the tensorboard command, runs without the log folder's experiment (the project before)",
    "experiment": "the tensorboard command, the log folder's experiment written as every run now does",
    "project": "the experiment, and TensorBoard as docker-compose.yml starts it (app/tensorboard_server.py)",
}
COMPARED = 10  # the runs whose curves a user overlays in the Scalars tab (TensorBoard selects none of 1,500)


def page_loads(runs: list[str]):
    """What a tab's page load asks for, in order, as (kind, method, path, body, form): the requests
    that TensorBoard 2.21's frontend sent for the Scalars and HParams tabs, recorded with Chromium.
    A generator: each answer is sent back in, as the next request is built from it."""
    hparams = f"{EXPERIMENT}/data/plugin/hparams"  # the runs table beside every dashboard
    compared = [r for r in runs if r.endswith(("/train", "/validation"))][:2 * COMPARED]
    yield "runs", "GET", "/data/runs", None, False
    experiment = yield "hparams experiment (runs table)", "POST", f"{hparams}/experiment", json.dumps(
        {"experimentName": "defaultExperimentId", "hparamsLimit": 1000, "includeMetrics": False}), False
    yield "hparams session_groups (runs table)", "POST", f"{hparams}/session_groups", \
        _runs_table(experiment), False
    yield "scalars tags", "GET", "/data/plugin/scalars/tags", None, False
    yield "scalars_multirun", "POST", "/data/plugin/scalars/scalars_multirun", \
        urllib.parse.urlencode([("tag", "epoch_accuracy"), *[("runs", r) for r in compared]]), True
    experiment = yield "hparams experiment (HParams tab)", "POST", "/data/plugin/hparams/experiment", \
        json.dumps({"experimentName": "", "hparamsLimit": 1000}), False
    yield "hparams session_groups (HParams tab)", "POST", "/data/plugin/hparams/session_groups", \
        _hparams_tab(experiment), False


class Latencies:
    def __init__(self):
        self.seconds: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def add(self, kind: str, seconds: float | None, error: str | None = None) -> None:
        with self.lock:
            self.seconds.setdefault(kind, [])
            self.errors.setdefault(kind, [])
            (self.errors[kind].append(error) if error else self.seconds[kind].append(seconds))


def drive(port: int, clients: int, seconds: float, runs: list[str]) -> Latencies:
    latencies = Latencies()
    end = time.monotonic() + seconds

    def tab():
        client = Client(port)
        while time.monotonic() < end:
            steps, answer = page_loads(runs), None
            try:
                kind, method, path, body, form = next(steps)
                while True:
                    started = time.monotonic()
                    try:
                        answer = client.request(method, path, body, form)
                        latencies.add(kind, time.monotonic() - started)
                    except Exception as e:  # counted, and the page load goes on, as a browser's would
                        latencies.add(kind, None, f"{type(e).__name__}: {e}")
                        client = Client(port)
                        answer = {}
                    kind, method, path, body, form = steps.send(answer)
            except StopIteration:
                pass

    threads = [threading.Thread(target=tab, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def wait_for_runs(port: int, wanted, timeout: float) -> float:
    """Seconds until /data/runs answers with every run of `wanted` (a set, or a predicate on the list)."""
    started = time.monotonic()
    client = Client(port)
    while time.monotonic() - started < timeout:
        try:
            runs = client.request("GET", "/data/runs")
            if (wanted(runs) if callable(wanted) else wanted <= set(runs)):
                return time.monotonic() - started
        except Exception:
            client = Client(port)
        time.sleep(0.25)
    raise TimeoutError(f"TensorBoard did not list the runs within {timeout:.0f} s")


def _cpu_seconds(pid: int) -> float:
    """CPU time of process `pid` and its children (TensorBoard's data server is one)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wait_until_read(pid: int, timeout: float) -> float:
    """Seconds until TensorBoard has read the logs: it uses under a tenth of a core for 3 s."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = _cpu_seconds(pid)
        time.sleep(3)
        if _cpu_seconds(pid) - before < 0.3:
            return time.monotonic() - started - 3
    raise TimeoutError(f"TensorBoard was still reading the logs after {timeout:.0f} s")


# --- memory under distinct requests (--memory) ------------------------------------------------------

def small_logdir(logdir: Path, runs: int = 3, steps: int = 50) -> None:
    """`runs` runs of one scalar curve each: enough for /data/runs and the tags to have answers."""
    import tensorflow as tf

    for run in range(runs):
        with tf.summary.create_file_writer(str(logdir / f"run-{run}")).as_default():
            for step in range(steps):
                tf.summary.scalar("loss", 1.0 / (step + 1), step=step)


def rss_bytes(pid: int) -> int:
    """The resident memory of process `pid` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def first_line(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> str:
    """The status line answering request `head` (its header lines), `body` sent only while no answer
    has come, as a client that reads while it sends: a server may answer before reading the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + b"\r\n\r\n")
        s.setblocking(False)
        sent, answer, deadline = 0, b"", time.monotonic() + timeout
        while b"\r\n" not in answer and time.monotonic() < deadline:
            try:
                received = s.recv(4096)
                if not received:
                    break
                answer += received
                continue
            except BlockingIOError:
                pass
            except ConnectionError:  # reset: what it answered before is all there is
                break
            try:
                sent += s.send(body[sent:sent + 65536]) if sent < len(body) else 0
            except (BlockingIOError, ConnectionError):
                pass
            time.sleep(0.0005)
        return answer.split(b"\r\n", 1)[0].decode()


def chunked(body: bytes, size: int = 65536) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def distinct_requests(port: int, first: int, count: int, threads: int = 4) -> int:
    """GET /data/runs?n=<first>... count times, over `threads` clients; returns the answers not 200."""
    numbers, failed, lock = iter(range(first, first + count)), [0], threading.Lock()

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            connection.request("GET", f"/data/runs?n={n}", headers={"Accept-Encoding": "gzip"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                with lock:
                    failed[0] += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return failed[0]


def memory(args: argparse.Namespace) -> int:
    from app import tensorboard_server as shared

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-tensorboard-memory-"))
    logdir = work / "fit-small"
    if not logdir.is_dir():
        small_logdir(logdir)
    port = free_port()
    command = local(compose_command(), logdir, port)
    # The worst case: every request within the stale window (STALE_FOR reload intervals), so that
    # only the bounds, not the answers' age, limit what is kept.
    command[command.index("--reload_interval") + 1] = str(RELOAD_FOR_MEMORY)
    print(f"CPU: {hardware.description()}, {os.cpu_count()} cores\nTensorBoard: {shlex.join(command)}",
          flush=True)
    log = open(work / "tensorboard-memory.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    mib = 1 << 20
    try:
        wait_for_runs(port, {"run-0", "run-1", "run-2"}, timeout=300)
        distinct_requests(port, -1000, 500)  # warm: 500 entries, so "before" includes what one costs once
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/data/runs", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        answer = len(response.read()) + sum(len(k) + len(v) for k, v in response.getheaders())
        counted = min(shared.BUDGET, shared.MAX_ENTRIES * (shared.ENTRY_COST + answer))
        before = rss_bytes(server.pid)
        print(f"bound (app/tensorboard_server.py): at most {shared.MAX_ENTRIES} entries and "
              f"{shared.BUDGET / mib:.0f} MiB counted, {shared.ENTRY_COST} bytes an entry plus its answer "
              f"({answer} bytes here): at most {counted / mib:.1f} MiB for these answers\n"
              f"RSS before: {before / mib:.1f} MiB", flush=True)
        samples, failed, step = [], 0, max(1, args.requests // 10)
        for done in range(0, args.requests, step):
            count = min(step, args.requests - done)
            failed += distinct_requests(port, done, count)
            samples.append((done + count, rss_bytes(server.pid)))
            print(f"  after {done + count:6,} distinct requests: RSS {samples[-1][1] / mib:7.1f} MiB",
                  flush=True)
        big = b"x" * (5 << 20)
        head = b"POST /data/plugin/hparams/session_groups HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain"
        started = time.monotonic()
        announced = first_line(port, head + b"\r\nContent-Length: %d" % len(big), big)
        announced_s = time.monotonic() - started
        streamed = first_line(port, head + b"\r\nTransfer-Encoding: chunked", chunked(big))
        after = rss_bytes(server.pid)
        others = {pid: rss_bytes(pid) for pid in children(server.pid)}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    grown = after - before
    within = grown <= shared.BUDGET and failed == 0 and "413" in announced and "413" in streamed
    print(f"5 MB body, Content-Length: {announced!r} in {announced_s:.2f} s; chunked: {streamed!r}\n"
          f"RSS after: {after / mib:.1f} MiB, grown {grown / mib:.1f} MiB for {args.requests:,} distinct "
          f"requests ({failed} not answered 200); the data server (a child): "
          f"{', '.join(f'{r / mib:.1f} MiB' for r in others.values()) or 'none'}\n"
          f"{'within' if within else 'NOT within'} the bound of {shared.BUDGET / mib:.0f} MiB", flush=True)
    results = {"cpu": hardware.description(), "command": command, "requests": args.requests,
               "rss_before": before, "rss_after": after, "samples": samples, "not_200": failed,
               "body_5mb_announced": announced, "body_5mb_chunked": streamed,
               "data_server_rss": list(others.values()),
               "bound": {"max_entries": shared.MAX_ENTRIES, "budget": shared.BUDGET, "answer_bytes": answer,
                         "entry_cost": shared.ENTRY_COST, "max_body": shared.MAX_BODY}}
    out = Path(args.out if args.out != DEFAULT_OUT else "artifacts/bench-tensorboard-memory.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"results: {out}")
    return 0 if within else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.tensorboard_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=500, help="trials in the log folder (default: 500)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the real trial copied (default: 10)")
    p.add_argument("--clients", default="1,10,50", help="client counts, a round each (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=20, help="length of a round (default: 20)")
    p.add_argument("--variant", choices=VARIANTS, default="project",
                   help="what is measured (default: %(default)s): "
                        + "; ".join(f"{k}: {v}" for k, v in VARIANTS.items()))
    p.add_argument("--work", help="build the log folder here and keep it; reused if it is there already")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="the results as JSON (default: %(default)s; with --memory "
                        "artifacts/bench-tensorboard-memory.json)")
    p.add_argument("--memory", action="store_true",
                   help="measure the server's memory under distinct requests instead (see above)")
    p.add_argument("--requests", type=int, default=20000,
                   help="with --memory: the distinct requests sent (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.memory:
        return memory(args)
    counts = [int(c) for c in args.clients.split(",")]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-tensorboard-"))
    variant, experiment = args.variant, args.variant != "before"
    logdir = work / f"fit-{'with' if experiment else 'without'}-experiment-{args.runs}"
    print(f"CPU: {hardware.description()}, {os.cpu_count()} cores\nvariant {variant}: {VARIANTS[variant]}",
          flush=True)
    if not logdir.is_dir():
        source = work / "source" / "fit" / f"{SWEEP}-trial-000"
        if not source.is_dir():
            started = time.monotonic()
            source = train_source(work, args.epochs)
            print(f"trained the trial to copy ({args.epochs} epochs) in {time.monotonic() - started:.0f} s",
                  flush=True)
        started = time.monotonic()
        build_logdir(source, logdir, args.runs, experiment)
        print(f"copied it {args.runs} times in {time.monotonic() - started:.0f} s: {logdir}", flush=True)
    from app.tabs.hparams import EXPERIMENT_RUN

    names = sorted(p.name for p in logdir.iterdir() if p.is_dir() and p.name != EXPERIMENT_RUN)
    runs = sorted({*names, *(f"{n}/{sub}" for n in names for sub in ("train", "validation")),
                   *([EXPERIMENT_RUN] if experiment else [])})

    port = free_port()
    command = local(compose_command() if variant == "project" else BEFORE, logdir, port)
    print("TensorBoard:", shlex.join(command), flush=True)
    log = open(work / f"tensorboard-{variant}.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    results = {"cpu": hardware.description(), "variant": variant, "runs": args.runs, "command": command,
               "rounds": []}
    try:
        loaded = wait_for_runs(port, set(runs), timeout=900)
        read = wait_until_read(server.pid, timeout=900)
        client = Client(port)
        shown = client.request("POST", "/data/plugin/hparams/session_groups", _hparams_tab(
            client.request("POST", "/data/plugin/hparams/experiment", json.dumps({"experimentName": ""}))))
        print(f"TensorBoard listed all {len(runs)} runs {loaded:.0f} s after its start, had read them after "
              f"{read:.0f} s; its HParams tab lists {shown.get('totalSize', 0)} trials", flush=True)
        results.update(seconds_to_list_all_runs=loaded, seconds_to_read_all_runs=read,
                       hparams_tab_trials=shown.get("totalSize", 0))
        print(f"\n{'request':40} {'clients':>7} {'requests':>8} {'errors':>6} "
              f"{'p50 s':>7} {'p95 s':>7} {'max s':>7}")
        for clients in counts:
            new_run, watcher = {}, None
            if clients == counts[min(1, len(counts) - 1)]:  # under load: how soon a new run shows
                watcher = threading.Thread(target=_time_new_run, args=(port, logdir, new_run, clients))
                watcher.start()
            latencies = drive(port, clients, args.seconds, runs)
            if watcher:
                watcher.join()
                results["new_run"] = new_run
            for kind, seconds in latencies.seconds.items():
                errors = latencies.errors[kind]
                row = {"kind": kind, "clients": clients, "requests": len(seconds), "errors": len(errors),
                       "p50": statistics.median(seconds) if seconds else None,
                       "p95": percentile(seconds, 95) if seconds else None, "max": max(seconds, default=None),
                       "first_error": errors[0] if errors else None}
                results["rounds"].append(row)
                shown = [f"{row[k]:7.3f}" if row[k] is not None else "      -" for k in ("p50", "p95", "max")]
                print(f"{kind:40} {clients:7} {len(seconds):8} {len(errors):6} {' '.join(shown)}", flush=True)
        if "seconds" in results.get("new_run", {}):
            print(f"\na new run was listed {results['new_run']['seconds']:.1f} s after it was copied in, "
                  f"under {results['new_run']['clients']} clients")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"results: {args.out}")
    return 0


def _time_new_run(port: int, logdir: Path, result: dict, clients: int) -> None:
    time.sleep(2)  # the clients are under way
    source = sorted(p for p in logdir.iterdir() if p.is_dir())[0]
    target = logdir / f"{SWEEP}-new-{int(time.time())}"
    copy_run(source, target, random.Random(1))
    result.update(clients=clients, seconds=wait_for_runs(port, lambda runs: target.name in runs, timeout=120))
    shutil.rmtree(target)


if __name__ == "__main__":
    sys.exit(main())
