"""The compose sweep profile for real: `make sweep` as the unprivileged user starts two sweeper
containers that share one sweep file and ./logs, and train different trials, each a normal run that
the TensorBoard container shows. One sweeper is `docker kill`ed mid-trial: Docker leaves it dead (a
container stopped by hand), the other takes its trial over from the last checkpoint, and make says
which sweeper ended how; the same command again exits 0 with every trial complete. Then the HParams
tab, in Chromium, lists the trials beside their learning rate and batch size.

The test names its own sweep (e2e) and looks at its runs only, and removes whatever sweeper containers
it left, so neither the order of the tests nor what other tests left in ./logs matters.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
from helpers import wait_for
from stack import ARTIFACTS, PROJECT, TB_SHOWN, sh, tb_get, tb_post

pytestmark = pytest.mark.e2e
NAME, TRIALS, EPOCHS = "e2e", 4, 6
RUNS = [f"{NAME}-trial-{n:03d}" for n in range(TRIALS)]
# Long enough a trial to kill one mid-way: on the committed slice (1,200 images) an epoch at batch 32
# takes a couple of seconds, on the shared 10,000 a few; no pruning, so every trial trains 6 epochs.
SWEEP_FILE = """\
# tests/e2e/test_sweep.py's sweep: short trials, one of them killed mid-way.
name: {name}
trials: {trials}
pruning: false
parameters:
  learning_rate: {{low: 0.0005, high: 0.01, log: true}}
  batch_size: {{choices: [32, 64]}}
fixed:
  epochs: {epochs}
"""
# A sweeper's line, prefixed by compose: "sweeper-2  | trial 1 (...): starting run logs/fit/e2e-trial-001".
STARTED = re.compile(rf"^(sweeper-\d+)\s+\| trial \d+ \(.*\): starting run logs/fit/({NAME}-trial-\d{{3}})$")
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def fresh_sweep(stack, name: str, trials: int) -> list[str]:
    """sweeps/NAME.yaml in the user's checkout, with no study or trial left by an earlier start; its runs."""
    sweep_file = stack.dir / "sweeps" / f"{name}.yaml"
    sweep_file.write_text(SWEEP_FILE.format(name=name, trials=trials, epochs=EPOCHS))
    os.chown(sweep_file, stack.uid, stack.gid)
    runs = [f"{name}-trial-{n:03d}" for n in range(trials)]
    for folder in [stack.dir / "logs" / "sweeps" / name, *(stack.dir / "logs" / "fit" / r for r in runs)]:
        shutil.rmtree(folder, ignore_errors=True)
    return runs


def sweepers(*, stopped: bool = True) -> list[str]:
    """The sweeper containers (by compose's labels), stopped ones too unless `stopped` is false."""
    return sh("docker", "ps", "-q" + "a" * stopped, "--filter", f"label=com.docker.compose.project={PROJECT}",
              "--filter", "label=com.docker.compose.service=sweeper").stdout.split()


def sweeper_container(number: str) -> str:
    """The running sweeper container that compose numbers `number` (its output's `sweeper-N |`)."""
    [found] = sh("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                 "--filter", "label=com.docker.compose.service=sweeper",
                 "--filter", f"label=com.docker.compose.container-number={number}").stdout.split()
    return found


def checkpoints(stack, run: str) -> list[int]:
    folder = stack.dir / "logs" / "fit" / run / "checkpoints"
    return sorted(int(p.name[6:]) for p in folder.glob("epoch-*")) if folder.is_dir() else []


def a_trial_mid_way(stack, runs: list[str]) -> str | None:
    """One of `runs` with an epoch saved and not finished (no metrics.json yet)."""
    return next((run for run in runs if checkpoints(stack, run)
                 and not (stack.dir / "logs" / "fit" / run / "metrics.json").exists()), None)


def epoch_steps(run: str) -> list[int]:
    try:
        points = tb_get(f"/data/plugin/scalars/scalars?run={run}/validation&tag=epoch_loss")
        return [step for _, step, _ in points]
    except OSError:  # not listed yet
        return []


def owners(stack, *folders) -> set[tuple[int, int]]:
    return {(p.stat().st_uid, p.stat().st_gid) for f in folders for p in [f, *f.rglob("*")]}


class MakeSweep:
    """`make sweep ...` in the background, its output read line by line as it comes."""

    def __init__(self, stack, args: list[str]):
        self.process = stack.start("make", "sweep", *args)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def started(self, run: str) -> str | None:
        """The compose name (sweeper-N) of the sweeper that started `run`, once it has said so."""
        return next((m[1] for m in map(STARTED.match, list(self.lines)) if m and m[2] == run), None)

    def finish(self, timeout: float) -> tuple[int, str]:
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return self.process.returncode, self.output()


@pytest.fixture
def make_sweep(stack):
    started = []

    def start(args: list[str]) -> MakeSweep:
        started.append(MakeSweep(stack, args))
        return started[-1]

    yield start
    for each in started:  # however the test ended: no make and no sweeper container left behind
        each.process.kill()
    if sweepers():
        stack.run("docker", "compose", "--profile", "sweep", "rm", "--force", "--stop", "sweeper")


class Chromium:
    """Headless Chromium driven over its DevTools pipe (fds 3 and 4, NUL-separated JSON messages).

    TensorBoard's HParams tab is a Polymer element that renders into shadow roots, which `--dump-dom`
    leaves out (it shows an empty <tf-hparams-dashboard>); here a script reads the text of every
    shadow root, and the screenshot is taken once that text is there, not after a guessed delay.
    """

    TEXT = """(() => {
      const texts = [];
      const visit = (root) => {
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
        for (let n = walker.currentNode; n; n = walker.nextNode()) {
          if (n.nodeType === Node.TEXT_NODE) {
            if (!['STYLE', 'SCRIPT'].includes(n.parentNode.nodeName) && n.textContent.trim()) {
              texts.push(n.textContent.trim());
            }
          } else if (n.shadowRoot) {
            visit(n.shadowRoot);
          }
        }
      };
      visit(document);
      return texts.join('\\n');
    })()"""

    def __enter__(self):
        # Chromium's helper processes may still write into it as it ends: never fail on cleaning up.
        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        to_chromium, self._out = os.pipe()
        self._in, from_chromium = os.pipe()
        # Above 9, so that moving them to 3 and 4 in the child cannot overwrite one with the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chromium, from_chromium)]
        for fd in (to_chromium, from_chromium):
            os.close(fd)

        def pipes_as_3_and_4():
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", "--window-size=1500,1000",
             f"--user-data-dir={self.profile.name}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=pipes_as_3_and_4, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in high:
            os.close(fd)
        self._ids, self._buffer = 0, b""
        [page] = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        attached = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        self.session = attached["sessionId"]
        return self

    def __exit__(self, *_):
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._out)
        os.close(self._in)
        self.profile.cleanup()

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._ids += 1
        message = {"id": self._ids, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:  # events come in between; the answer is the message with our id
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise AssertionError(f"Chromium ended (code {self.process.poll()}) before answering "
                                         f"{method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._ids:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]

    def text_once_it_shows(self, url: str, wanted: list[str], timeout: float = 90) -> str:
        """Open `url` and return the page's text (shadow roots too) once every string of `wanted` is in it."""
        self.call("Page.navigate", self.session, url=url)

        def text() -> str | None:
            found = self.call("Runtime.evaluate", self.session, expression=self.TEXT, returnByValue=True)
            value = found["result"].get("value") or ""
            return value if all(w in value for w in wanted) else None

        try:
            return wait_for(text, timeout, f"{url} to show {wanted}", interval=0.5)
        except AssertionError:
            self.screenshot(ARTIFACTS / "tensorboard-hparams-sweep-failed.png")
            raise

    def screenshot(self, path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", self.session)["data"]))


def test_make_sweep_on_two_sweepers_survives_a_docker_kill_and_the_same_command_finishes_it(stack,
                                                                                            make_sweep):
    assert fresh_sweep(stack, NAME, TRIALS) == RUNS
    args = [f"SWEEP=sweeps/{NAME}.yaml", "SWEEPERS=2", f"SWEEP_ARGS=--data {stack.train_data}"]

    started = time.monotonic()
    first = make_sweep(args)
    run = wait_for(lambda: a_trial_mid_way(stack, RUNS), 1200, "a trial with a checkpoint", interval=0.2,
                   process=first.process)
    number = wait_for(lambda: first.started(run), 30, f"the line that started {run}").split("-")[1]
    container = sweeper_container(number)
    # docker kill: SIGKILL, as the user's own stop (Docker's restart policy leaves it alone).
    sh("docker", "kill", container)
    killed_at = checkpoints(stack, run)[-1]
    assert 0 < killed_at < EPOCHS and not (stack.dir / "logs" / "fit" / run / "metrics.json").exists()
    code, output = first.finish(timeout=3600)
    first_took = time.monotonic() - started
    print(f"first make sweep: {first_took:.0f} s; sweeper-{number} killed in {run} after epoch {killed_at}")
    print(output)
    # The recipe exits 1 (make: *** [Makefile:N: sweep] Error 1), and make itself then 2.
    assert code == 2, output
    assert re.search(r"^make: \*\*\* \[Makefile:\d+: sweep\] Error 1$", output, re.MULTILINE), output
    lines = output.splitlines()
    [failed] = [line for line in lines if line.startswith("sweep: failed: ")]
    assert f"{PROJECT}-sweeper-{number} exited with 137" in failed, failed
    assert failed.endswith("their output above says why. The same command continues the sweep, a stopped "
                           "trial from its last checkpoint"), failed
    assert not any(f"sweeper-{number} exited with code 137 (restarting)" in line for line in lines), output
    assert sweepers() == [], "make sweep left sweeper containers behind"

    started = time.monotonic()
    code, again = make_sweep(args).finish(timeout=3600)
    print(f"second make sweep: {time.monotonic() - started:.0f} s")
    print(again)
    assert code == 0, again
    lines = again.splitlines()
    assert f"sweep: done, all 2 containers exited with 0; TensorBoard: {TB_SHOWN}" in lines, again
    assert f"sweep: every trial, its settings and result: logs/sweeps/{NAME}/summary.json" in lines, again
    tables = [line for line in lines if line.endswith(f"| sweep {NAME}: {TRIALS} trials ({TRIALS} complete, "
                                                      "0 pruned, 0 failed)")]
    assert len(tables) == 2, again  # each sweeper's ranked table
    assert sum("| best: python -m app " in line for line in lines) == 2, again
    assert sweepers() == []

    # The study: every trial complete, one run folder each, and no other.
    fit, study = stack.dir / "logs" / "fit", stack.dir / "logs" / "sweeps" / NAME
    summary = json.loads((study / "summary.json").read_text())
    trials = sorted(summary["trials"], key=lambda t: t["number"])
    assert [(t["number"], t["state"], t["run"]) for t in trials] == \
        [(n, "complete", f"logs/fit/{r}") for n, r in enumerate(RUNS)], summary
    assert sorted(p.name for p in fit.glob(f"{NAME}-trial-*")) == RUNS
    for trial in trials:
        config = json.loads((fit / RUNS[trial["number"]] / "config.json").read_text())
        assert {k: config[k] for k in ("learning_rate", "batch_size")} == trial["params"]
        assert trial["params"]["batch_size"] in (32, 64), trial
        assert 0.0005 <= trial["params"]["learning_rate"] <= 0.01, trial
        done = json.loads((fit / RUNS[trial["number"]] / "metrics.json").read_text())
        assert done["epochs_completed"] == EPOCHS, done
    assert owners(stack, study, *(fit / r for r in RUNS)) == {(stack.uid, stack.gid)}

    # The killed trial was continued from its checkpoint, not started again.
    both = output + "\n" + again
    assert re.search(rf"\| trial \d+ \(.*\): continuing run logs/fit/{run}$", both, re.MULTILINE), both
    assert re.search(rf"\| resuming {run} after epoch {killed_at} of {EPOCHS}$", both, re.MULTILINE), both
    assert len(re.findall(rf": starting run logs/fit/{run}$", both, re.MULTILINE)) == 1, both

    # TensorBoard: every epoch of every trial once, and the HParams plugin lists the trials.
    for each in RUNS:
        wait_for(lambda r=each: epoch_steps(r) == list(range(EPOCHS)), 60,
                 f"TensorBoard to serve {each}'s epochs, each once")
    groups = tb_post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": STATUSES, "colParams": [], "startIndex": 0,
        "sliceSize": 1000})
    sessions = {s["name"]: (g["hparams"], s["status"]) for g in groups["sessionGroups"] for s in g["sessions"]
                if s["name"].startswith(f"{NAME}-trial-")}
    assert sorted(sessions) == RUNS, groups
    for trial in trials:
        hparams, status = sessions[RUNS[trial["number"]]]
        assert (hparams["learning_rate"], hparams["batch_size"], status) == \
            (pytest.approx(trial["params"]["learning_rate"]), trial["params"]["batch_size"], "STATUS_SUCCESS")

    # What a user sees: the HParams tab's table, one row per trial.
    shot = ARTIFACTS / "tensorboard-hparams-sweep.png"
    shot.unlink(missing_ok=True)
    with Chromium() as chromium:
        text = chromium.text_once_it_shows(TB_SHOWN + "/#hparams",
                                           ["Trial ID", *RUNS])
        time.sleep(1)  # the table is filled; let it draw
        chromium.screenshot(shot)
    assert shot.stat().st_size > 30_000, "the screenshot looks empty"
    print(f"HParams tab text (shadow DOM included): {text[text.index('Trial ID'):][:400]!r}")


def test_a_sweeper_whose_process_is_killed_is_restarted_and_continues_its_trial(stack, make_sweep):
    """kill -9 from the host, as the kernel's OOM killer would: a crash, which restart: on-failure answers."""
    if os.geteuid() != 0:
        pytest.skip("killing a container's process from the host needs root (make e2e runs as root)")
    [run] = fresh_sweep(stack, f"{NAME}-crash", 1)
    job = make_sweep([f"SWEEP=sweeps/{NAME}-crash.yaml", "SWEEPERS=1",
                      f"SWEEP_ARGS=--data {stack.train_data}"])
    wait_for(lambda: a_trial_mid_way(stack, [run]), 1200, f"{run}'s first checkpoint", interval=0.2,
             process=job.process)
    pid = sh("docker", "inspect", "--format", "{{.State.Pid}}", sweeper_container("1")).stdout.strip()
    sh("kill", "-9", pid)
    killed_at = checkpoints(stack, run)[-1]
    code, output = job.finish(timeout=1800)
    print(output)
    assert code == 0, output
    assert "sweeper-1 exited with code 137 (restarting)" in output
    # The restarted container's new sweeper took the trial over from its checkpoint.
    continued = rf"^sweeper-1 +\| trial 0 \(.*\): continuing run logs/fit/{run}$"
    assert re.search(continued, output, re.MULTILINE), output
    assert re.search(rf"\| resuming {run} after epoch {killed_at} of {EPOCHS}$", output, re.MULTILINE), output
    lines = output.splitlines()
    assert f"sweep: done, all 1 containers exited with 0; TensorBoard: {TB_SHOWN}" in lines
    done = json.loads((stack.dir / "logs" / "fit" / run / "metrics.json").read_text())
    assert done["epochs_completed"] == EPOCHS, done
    assert sweepers() == []
