"""The notebook profile for real: `make notebook` as the unprivileged user starts JupyterLab in its
container, which refuses requests without the token, is published on 127.0.0.1 only and is locked down
like the other services. The notebook runs inside the container headless (papermill), then in Chromium
as a user runs it, cell after cell, where the inline TensorBoard, served through Jupyter's port by
jupyter-server-proxy, must show the run's curves: the screenshot is artifacts/notebook-tensorboard.png.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from helpers import wait_for
from stack import ARTIFACTS, NOTEBOOK_PORT, PROJECT, sh
from test_sweep import Chromium

pytestmark = pytest.mark.e2e
RUN = "e2e-notebook"
CONTAINER = f"{PROJECT}-notebook-1"
# Papermill's parameters for the container: its offline data, one short run.
PARAMETERS = ["-p", "epochs", "2", "-p", "run_name", RUN]


def status_without_token(url: str) -> tuple[int, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=10) as response:
            return response.status, response.headers.get("Location", "")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location", "")


def in_container(stack, *args: str, timeout: float = 900):
    return stack.run("docker", "compose", "--profile", "notebook", "exec", "-T", "-w", "/app/notebooks",
                     "notebook", *args, timeout=timeout)


@pytest.fixture(scope="module")
def notebook(stack):
    env = stack.dir / ".env"
    before = env.read_text() if env.is_file() else None
    done = stack.run("make", "notebook", timeout=1800)
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stdout + done.stderr
    yield done.stdout
    stack.run("docker", "compose", "--profile", "notebook", "rm", "--force", "--stop", "notebook")
    # The other modules' tests check .env line by line: leave it without the token make notebook added.
    if before is not None:
        env.write_text(before)
    else:
        env.unlink(missing_ok=True)


def test_make_notebook_prints_the_address_with_a_token_that_is_required(stack, notebook):
    pattern = (rf"^JupyterLab: (http://127\.0\.0\.1:{NOTEBOOK_PORT}/lab/tree/mnist_tensorboard\.ipynb"
               r"\?token=(\w+)) ")
    [url] = re.findall(pattern, notebook, re.MULTILINE)
    address, token = url
    assert len(token) == 48 and f"JUPYTER_TOKEN={token}" in (stack.dir / ".env").read_text().splitlines()
    # Without the token: the API refuses, the page sends to the login form.
    assert status_without_token(f"http://127.0.0.1:{NOTEBOOK_PORT}/api/contents")[0] == 403
    code, where = status_without_token(f"http://127.0.0.1:{NOTEBOOK_PORT}/lab")
    assert code == 302 and "/login" in where, (code, where)
    assert status_without_token(f"http://127.0.0.1:{NOTEBOOK_PORT}/api/contents?token={token}")[0] == 200
    assert status_without_token(address)[0] == 200


def test_the_notebook_container_is_published_on_localhost_only_and_locked_down(stack, notebook):
    c = json.loads(sh("docker", "inspect", CONTAINER).stdout)[0]
    config, host = c["Config"], c["HostConfig"]
    assert [b["HostIp"] for b in host["PortBindings"]["8888/tcp"]] == ["127.0.0.1"]
    assert sh("docker", "port", CONTAINER, "8888").stdout.split() == [f"127.0.0.1:{NOTEBOOK_PORT}"]
    assert config["User"] == f"{stack.uid}:{stack.gid}"
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd") and not host.get("Privileged")
    assert host["ReadonlyRootfs"] is True
    assert {m["Destination"] for m in c["Mounts"]} >= {"/app/notebooks", "/app/logs", "/data"}


def test_the_notebook_runs_headless_inside_the_container(stack, notebook):
    started = time.monotonic()
    done = in_container(stack, "papermill", "mnist_tensorboard.ipynb", "/tmp/executed.ipynb",
                        "-p", "data", stack.train_data, *PARAMETERS, "-p", "run_name", "e2e-headless")
    print(f"papermill in the container: {time.monotonic() - started:.0f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    executed = json.loads(in_container(stack, "cat", "/tmp/executed.ipynb").stdout)
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors == []
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for c in executed["cells"]
                   for o in c.get("outputs", []))
    assert re.search(r'new URL\("/proxy/\d+/", window.location\)', html), "the frame is not proxied"
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert re.search(r"^predicted: [0-9 ]+$", text, re.MULTILINE), text[-2000:]
    assert (stack.dir / "logs" / "fit" / "e2e-headless" / "model.keras").is_file()


# The inline TensorBoard's page, read inside its frame (the same origin: Jupyter's proxy).
FRAME_TEXT = """(() => {
  const frame = document.querySelector('iframe[id^="tensorboard-frame-"]');
  if (!frame || !frame.contentDocument || !frame.contentDocument.body) return '';
  frame.scrollIntoView();
  const texts = [];
  const visit = (root) => {
    const walker = root.ownerDocument
      ? root.ownerDocument.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT)
      : root.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    for (let n = walker.currentNode; n; n = walker.nextNode()) {
      if (n.nodeType === Node.TEXT_NODE) { if (n.textContent.trim()) texts.push(n.textContent.trim()); }
      else if (n.shadowRoot) visit(n.shadowRoot);
    }
  };
  visit(frame.contentDocument);
  const charts = frame.contentDocument.querySelectorAll('canvas, svg path.line, line-chart').length;
  return texts.join('\\n') + '\\ncharts: ' + charts;
})()"""


def test_run_in_the_browser_the_inline_tensorboard_shows_the_runs_curves(stack, notebook):
    """What a user does: open the notebook in JupyterLab and run its cells with Shift+Enter."""
    token = re.search(r"\?token=(\w+)", notebook)[1]
    # The notebook with this machine's parameters (offline data, 2 epochs), as papermill writes it.
    prepared = in_container(stack, "papermill", "--prepare-only", "mnist_tensorboard.ipynb",
                            "e2e-browser.ipynb", "-p", "data", stack.train_data, *PARAMETERS)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    shot = ARTIFACTS / "notebook-tensorboard.png"
    shot.unlink(missing_ok=True)
    with Chromium() as chromium:
        chromium.call("Page.navigate", chromium.session,
                      url=f"http://127.0.0.1:{NOTEBOOK_PORT}/lab/tree/e2e-browser.ipynb?token={token}")

        def evaluate(expression: str):
            found = chromium.call("Runtime.evaluate", chromium.session, expression=expression,
                                  returnByValue=True, awaitPromise=True)
            return found["result"].get("value")

        def kernels_idle() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{NOTEBOOK_PORT}/api/kernels?token={token}",
                                        timeout=10) as response:
                kernels = json.loads(response.read())
            return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)

        active = ("[...document.querySelectorAll('.jp-Notebook .jp-Cell')]"
                  ".findIndex(c => c.classList.contains('jp-mod-active'))")
        wait_for(lambda: evaluate("document.querySelectorAll('.jp-Notebook .jp-Cell').length") or 0, 120,
                 "JupyterLab to show the notebook's cells", interval=0.5)
        wait_for(kernels_idle, 120, "the notebook's kernel to be idle", interval=0.5)
        cells = evaluate("document.querySelectorAll('.jp-Notebook .jp-Cell').length")
        evaluate("document.querySelector('.jp-Notebook .jp-Cell').click()")
        wait_for(lambda: evaluate(active) == 0, 30, "the first cell to be selected", interval=0.2)
        for key in ["Escape"] + ["Enter"] * cells:
            before = evaluate(active)
            for kind in ("rawKeyDown", "keyUp"):
                chromium.call("Input.dispatchKeyEvent", chromium.session, type=kind, key=key, code=key,
                              windowsVirtualKeyCode={"Escape": 27, "Enter": 13}[key],
                              modifiers=8 if key == "Enter" else 0)
            if key == "Enter" and before < cells - 1:  # Shift+Enter queued the cell and moved on
                wait_for(lambda b=before: evaluate(active) > b, 30, "JupyterLab to take the keystroke",
                         interval=0.1)

        frame = "document.querySelector('iframe[id^=\"tensorboard-frame-\"]')"

        def frame_lists_the_run() -> bool:
            # The inline TensorBoard's own server, through Jupyter's proxy at the frame's address.
            src = evaluate(f"{frame}.getAttribute('src')") or ""
            page = src.split("#")[0].split("?")[0]
            address = urllib.parse.urljoin(f"http://127.0.0.1:{NOTEBOOK_PORT}/", page)
            try:
                with urllib.request.urlopen(f"{address.rstrip('/')}/data/runs?token={token}",
                                            timeout=10) as response:
                    return f"{RUN}/validation" in json.loads(response.read())
            except (OSError, ValueError) as e:
                print(f"inline TensorBoard at {address}: {e}")
                return False

        def curves():
            text = evaluate(FRAME_TEXT) or ""
            charts = int(text.rsplit("charts: ", 1)[1]) if "charts: " in text else 0
            return (text, charts) if f"{RUN}/validation" in text and charts else None

        try:
            wait_for(lambda: evaluate(FRAME_TEXT), 300, "the inline TensorBoard's page", interval=2)
            wait_for(lambda: (stack.dir / "logs" / "fit" / RUN / "model.keras").is_file(), 900,
                     f"{RUN} to finish", interval=1)
            # TensorBoard's page lists the runs it found when it loaded (and on its reload timer,
            # which a headless page may not run): once its server lists the run, its reload button,
            # as a user would press it.
            wait_for(frame_lists_the_run, 60, "the inline TensorBoard's server to list the run", interval=1)
            evaluate(f"{frame}.contentWindow.location.reload()")
            text, _ = wait_for(curves, 120, "the inline TensorBoard to show the run's curves", interval=2)
            # The screenshot once the charts stop changing: the same count twice, a second apart.
            counts = []
            wait_for(lambda: counts.append((curves() or ("", 0))[1]) or counts[-2:] == [counts[-1]] * 2, 30,
                     "the charts to finish drawing", interval=1)
        finally:
            chromium.screenshot(shot)
    assert shot.stat().st_size > 50_000, "the screenshot looks empty"
    print(f"inline TensorBoard text: {text[:300]!r}")
