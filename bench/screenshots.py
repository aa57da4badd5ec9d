"""See every TensorBoard tab as a user does: one PNG per tab. A developer tool, not a benchmark.

    python bench/screenshots.py logs/demo                  # PNGs into a new folder under /tmp
    python bench/screenshots.py logs/demo --out shots      # ... or into shots/

It starts this venv's `tensorboard --logdir LOGDIR --host 127.0.0.1` on a free port, waits until it
answers, asks its HTTP API which tabs have data (/data/plugins_listing, /data/runs, each plugin's
tags), and photographs each tab that has some with headless Chromium at 1600x1000; a tab without
data gets a line saying so, not a blank picture. TensorBoard and Chromium are stopped at the end,
also on an error. Chromium is installed with apt-get when it is missing (as root).

Chromium is driven through its DevTools protocol over --remote-debugging-pipe (JSON on two file
descriptors: the standard library is enough), not `chromium --screenshot URL`, because the Graphs
tab needs clicks: once its run list arrives it goes back to its first run, whatever the URL says
(#graphs&run=RUN), and each entry of its Tag menu holds one kind of graph (a trial's run graph,
"Default", the op graph of a training step; its `keras` tag the model's conceptual graph). So the
tool picks the run in the Run menu and the entry in the Tag menu, then the graph type that entry
has, and in a conceptual graph opens the model's node so that its layers show: graphs-op.png for
the run graph and graphs-TAG.png for each tag of that run. Each tab is photographed
once its page has loaded and no data request (XHR, fetch, image) has been in flight for QUIET_S seconds.
"""

import argparse
import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

WINDOW = (1600, 1000)  # the size of hparams-screenshot's pictures: the HParams table fits without scrolling
QUIET_S = 2.0  # TensorBoard's page fetches in bursts (runs, then tags, then data); 2 s without one is "done"
START_S = 60  # TensorBoard answers in seconds; a logdir with many runs takes longer to list them all
PAGE_S = 60  # the most one tab may take to load and draw (the Graphs tab's clicks wait at most 3 x 15 s)
# The requests that bring a tab its data; the app's own files (a chart worker's script too) come before the load event.
DATA_REQUESTS = ("XHR", "Fetch", "Image")

# Each tab, by the name TensorBoard gives it in the URL (#scalars) and in /data/plugins_listing,
# and the route that lists its data: a tab is shown when its plugin is enabled and that answer is not
# empty (hparams: when enabled). The Graphs tab's answer also holds the runs with a graph.
TABS = {
    "scalars": "/data/plugin/scalars/tags",
    "timeseries": "/data/plugin/timeseries/tags",
    "hparams": None,  # it opens on the table view
    "graphs": "/data/plugin/graphs/info",
    "distributions": "/data/plugin/distributions/tags",
    "histograms": "/data/plugin/histograms/tags",
    "images": "/data/plugin/images/tags",
    "pr_curves": "/data/plugin/pr_curves/tags",
    "text": "/data/plugin/text/tags",
}

# What a user does on the Graphs tab, as a JavaScript function of the run's name, run in the page.
# deep() finds an element through TensorBoard's nested shadow roots; the graph is drawn in tf-graph-scene's.
SHOW_GRAPH = """async ([run, tag]) => {
  const deep = (sel, root = document) => root.querySelector(sel) ||
    [...root.querySelectorAll('*')].map(e => e.shadowRoot && deep(sel, e.shadowRoot)).find(Boolean) || null;
  const until = async (test, what) => {
    for (let t = 0; t < 150; t++) { const v = test(); if (v) return v; await new Promise(r => setTimeout(r, 100)); }
    throw new Error('the Graphs tab shows no ' + what + ' after 15 s');
  };
  const menu = await until(() => deep('.runs-row paper-listbox'), 'Run menu');
  (await until(() => [...menu.querySelectorAll('paper-item')].find(i => i.textContent.trim() === run),
               run + ' in its Run menu')).click();
  const tags = await until(() => deep('.tags-row paper-listbox'), 'Tag menu');
  (await until(() => [...tags.querySelectorAll('paper-item')].find(i => i.textContent.trim() === tag),
               tag + ' in its Tag menu')).click();
  const op = deep('paper-radio-button[name=op_graph]'), conceptual = deep('paper-radio-button[name=conceptual_graph]');
  if (op.disabled && !conceptual.disabled && !conceptual.checked) conceptual.click();
  if (!op.disabled && !op.checked) op.click();
  // The graph picked loads behind a progress bar (the board's progress, 100 when done); the one shown
  // before stays on screen until then.
  const board = deep('tf-graph-board'), done = () => (board.progress?.value ?? 100) >= 100;
  for (let t = 0; t < 30 && done(); t++) await new Promise(r => setTimeout(r, 100));
  await until(done, 'end to its loading');
  const scene = await until(() => { const s = deep('tf-graph-scene'); return s?.shadowRoot.querySelector('g.node') && s; },
                            'graph');
  const drawn = scene.shadowRoot.querySelectorAll('g.node').length;
  if (!conceptual.checked) return;  // an op graph shows its top-level scopes (the model, gradients, optimizer)
  // Open each top-level group (a Sequential model is one) so that its layers show.
  const groups = scene.shadowRoot.querySelectorAll('#root > .scene > .core > .nodes > .meta > .nodeshape > .buttoncontainer');
  groups.forEach(b => b.dispatchEvent(new MouseEvent('click', {bubbles: true})));
  await until(() => !groups.length || scene.shadowRoot.querySelectorAll('g.node').length > drawn, 'layers');
}"""


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


@contextlib.contextmanager
def tensorboard(logdir, log_file):
    """Run TensorBoard on logdir until the block ends; yield its base URL and /data/plugins_listing
    once it has read the logdir."""
    exe = Path(sys.executable).with_name("tensorboard")  # this venv's, not whichever is first on PATH
    if not exe.exists():
        raise SystemExit(f"no {exe}: run this with the project's venv (. .venv/bin/activate)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_file, "w") as log:
        proc = subprocess.Popen([exe, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        # It answers before it has read the logdir: wait until its runs and plugins stop changing.
        seen, deadline = None, time.monotonic() + START_S
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                now = get_json(url + "/data/runs"), get_json(url + "/data/plugins_listing")
                if now[0] and now == seen:
                    break
                seen = now
            time.sleep(1)
        else:
            raise SystemExit(f"TensorBoard did not list the runs of {logdir} within {START_S} s; see {log_file}")
        yield url, seen[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def tabs_with_data(url, plugins):
    """{tab: its route's answer} for the tabs with data to show; a printed line for each other tab."""
    found = {}
    for tab, route in TABS.items():
        enabled = plugins.get(tab, {}).get("enabled")
        data = enabled and (get_json(url + route) if route else True)
        if tab == "timeseries" and data:  # {"scalars": {"runTagInfo": {...}}, "histograms": ..., "images": ...}
            data = any(any(part.values()) for part in data.values())
        if data:
            found[tab] = data
        else:
            print(f"{tab}: skipped, no data to show (TensorBoard's {tab} plugin is "
                  f"{'enabled but lists no tags' if enabled else 'inactive'})")
    return found


def ensure_chromium():
    """The chromium command, installed with apt-get (as ../shared/tools/hparams-screenshot does) if missing."""
    if shutil.which("chromium"):
        return "chromium"
    if os.geteuid() != 0:
        raise SystemExit("Chromium is missing: install it (sudo apt-get install chromium) and run this again")
    print("installing chromium with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode:
            raise SystemExit(f"`{' '.join(cmd)}` failed: install Chromium yourself and run this again")
    return "chromium"


class Chromium:
    """Headless Chromium, spoken to through the DevTools protocol on the pipe it reads at fd 3 and writes at fd 4."""

    def __init__(self, command):
        self.profile = tempfile.TemporaryDirectory(prefix="screenshots-chromium-")
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()

        def wire():  # in the child: move the pipe ends to fds 3 and 4 (above 9 first, so they clobber nothing)
            r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_r, from_w))
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [command, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WINDOW[0]},{WINDOW[1]}",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self.buffer, self.last_id, self.session = b"", 0, None
        self.loaded, self.in_flight, self.last_request = False, set(), time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(Exception):
            self.call("Browser.close")
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_w)
        os.close(self.from_r)
        self.profile.cleanup()

    def _receive(self, timeout):
        """One message from Chromium (None after timeout s); keeps count of the page's requests in flight."""
        while b"\0" not in self.buffer:
            if not select.select([self.from_r], [], [], timeout)[0]:
                return None
            chunk = os.read(self.from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium quit")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        method, params = message.get("method"), message.get("params", {})
        if message.get("sessionId", self.session) != self.session:
            return message  # a tab closed before: its late requests never finish, and are not this page's
        if method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Network.requestWillBeSent" and params.get("type") in DATA_REQUESTS:
            self.in_flight.add(params["requestId"])
            self.last_request = time.monotonic()
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self.in_flight.discard(params["requestId"])
            self.last_request = time.monotonic()
        return message

    def call(self, method, **params):
        """Send one command (to the open tab, if any) and return its result."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if self.session and not method.startswith(("Browser.", "Target.")):
            message["sessionId"] = self.session
        os.write(self.to_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + PAGE_S
        while (answer := self._receive(max(0.0, deadline - time.monotonic()))) is not None:
            if answer.get("id") == self.last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error'].get('message')}")
                return answer["result"]
        raise RuntimeError(f"Chromium did not answer {method} within {PAGE_S} s")

    def wait_quiet(self):
        """Wait for the load event and then until no data request has been in flight for QUIET_S seconds."""
        deadline = time.monotonic() + PAGE_S
        while not self.loaded or self.in_flight or time.monotonic() - self.last_request < QUIET_S:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the page still loads after {PAGE_S} s")
            self._receive(0.2)

    def screenshot(self, url, png, script=None, argument=None):
        """Open url in a fresh tab, wait until it is loaded (then run script(argument) in it), save a PNG."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            self.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                      deviceScaleFactor=1, mobile=False)
            self.call("Page.enable")
            self.call("Network.enable")
            self.loaded, self.last_request = False, time.monotonic()
            self.in_flight.clear()
            self.call("Page.navigate", url=url)
            self.wait_quiet()
            if script:
                done = self.call("Runtime.evaluate", expression=f"({script})({json.dumps(argument)})",
                                 awaitPromise=True)
                if "exceptionDetails" in done:  # an Error's description: its message, then the stack
                    raise RuntimeError(done["exceptionDetails"]["exception"]["description"].splitlines()[0])
                self.wait_quiet()
            png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        finally:
            self.session = None
            self.call("Target.closeTarget", targetId=target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", type=Path, help="a logdir of train.py (or any TensorBoard logdir)")
    parser.add_argument("--out", type=Path, help="folder for the PNGs and tensorboard.log, TensorBoard's output "
                                                 "(default: a new folder under /tmp)")
    args = parser.parse_args(argv)
    if not args.logdir.is_dir():
        print(f"no folder {args.logdir}: give the --logdir that train.py wrote", file=sys.stderr)
        return 2
    if not next(args.logdir.rglob("events.out.tfevents.*"), None):
        print(f"{args.logdir} holds no events.out.tfevents.* file: it is no TensorBoard logdir", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="tb-screenshots-"))
    out.mkdir(parents=True, exist_ok=True)
    chromium = ensure_chromium()

    try:
        with tensorboard(args.logdir, out / "tensorboard.log") as (url, plugins), Chromium(chromium) as browser:
            for tab, data in tabs_with_data(url, plugins).items():
                shots = [(out / f"{tab}.png", tab, None, None)]
                if tab == "graphs":  # each graph of the first run, in TensorBoard's order, with one
                    run = next(name for name in get_json(url + "/data/runs") if name in data)
                    entries = [("op", "Default")] * data[run]["run_graph"] + [(t, t) for t in sorted(data[run]["tags"])]
                    shots = [(out / f"graphs-{name}.png", f"graphs&run={urllib.parse.quote(run)}", SHOW_GRAPH,
                              [run, entry]) for name, entry in entries]
                for png, fragment, script, argument in shots:
                    browser.screenshot(f"{url}/#{fragment}", png, script, argument)
                    print(png, flush=True)
    except RuntimeError as error:  # the page or Chromium failed; both processes are stopped by now
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
