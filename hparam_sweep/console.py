"""What the user sees on the terminal besides the results: TensorFlow's C++ noise kept out of
stderr, and a progress line for the long one-off jobs (decoding the images, checking a download).

Light on purpose (no TensorFlow, no NumPy): data_split.py and train.py's --help import it.
"""

import contextlib
import logging
import os
import subprocess
import sys
import time

# TensorFlow's C++ log lines that TF_CPP_MIN_LOG_LEVEL does not hide and that ask nothing of the
# user: absl's notice that it logs before being initialised, printed twice whatever the level;
# "no CUDA driver" on a machine without a GPU (the run's own summary names the device); oneDNN's
# notice, printed at each TensorFlow start on CPUs where it is on by default (AVX-512 ones, Intel
# and AMD: never on an AVX2-only CPU); and a tf.data graph rewrite that TensorFlow itself says
# "may be expected", printed for every trial.
# Under --ray the same lines come from each worker process, passed on by Ray behind "(pid=N)",
# "(trial-name pid=N)" or, from another machine, "(trial-name pid=N, ip=A)", in colour unless
# RAY_COLOR_PREFIX=0 (see ray_worker_output).
RAY_PREFIX = r"(?:(?:\x1b\[\d+m)?\((?:[^()]* )?pid=\d+(?:, ip=[^()]+)?\)(?:\x1b\[0m)? )?"
TF_NOISE = RAY_PREFIX + (
    r"(?:WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|[IWE]\d{4} [\d:.]+ +\d+ (?:cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR \(303\)$"
    r"|port\.cc:\d+\] oneDNN custom operations are on\. "
    r"|node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition))"
)
# Run in a separate process, not a thread: what TensorFlow writes just before it aborts (an
# unsupported CPU, a failed check) must still reach the terminal.
_FILTER = """
import re, sys
noise = re.compile(sys.argv[1].encode())
for line in sys.stdin.buffer:
    if not noise.match(line):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


def quiet_tensorflow():
    """Hide TensorFlow's C++ INFO and WARNING lines unless the user chose a level (call before
    TensorFlow is imported: it reads the variable once), and its Python notice about retracing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").addFilter(_not_retracing)


def _not_retracing(record):
    """False for TensorFlow's "N out of the last M calls to <function ...> triggered tf.function
    retracing" warning (a paragraph, printed twice). Every trial builds its own model, so every trial
    traces its own training function once; with few steps per epoch (tiny test data, a halving
    rung's continuation) those traces are most of the calls and TensorFlow takes them for a bug."""
    return "triggered tf.function retracing" not in record.getMessage()


def ray_worker_output(terminal):
    """Ray's documented settings for how the driver shows its workers' output, unless the user set
    them (call before Ray is imported: it reads RAY_DEDUP_LOGS once).

    Every line as it comes: Ray's deduplication merges lines that differ only in their numbers, so
    four trials' epoch lines became one "[repeated 4x across cluster]" showing one trial's metrics,
    the rest printed rungs later. No colour codes into a file or pipe (terminal: stdout is one)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not terminal:
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


@contextlib.contextmanager
def tensorflow_kept_quiet(verbose=False):
    """An entry point's whole run: TensorFlow's INFO and WARNING lines off and its known noise
    filtered from stderr (quiet_tensorflow, tensorflow_noise_filtered); with verbose, all of it."""
    if verbose:
        yield
        return
    quiet_tensorflow()
    with tensorflow_noise_filtered():
        yield


@contextlib.contextmanager
def tensorflow_noise_filtered():
    """Drop TF_NOISE lines from everything written to stderr (fd 2, C++ included) inside the block,
    unless TF_CPP_MIN_LOG_LEVEL asks for TensorFlow's INFO or WARNING lines (0 or 1)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        yield
        return
    sys.stderr.flush()
    stderr = os.dup(2)
    # Its own session, so that Ctrl-C stops the trainer but not its last words on the way out.
    child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, TF_NOISE],
                             stdin=subprocess.PIPE, stdout=stderr, start_new_session=True)
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # closes the pipe's last write end: the filter copies what is left and exits
        os.close(stderr)
        child.wait()


def minutes(seconds):
    """A duration for people: seconds up to 90, then minutes."""
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


class Progress:
    """`what: 5,120 of 20,000 images (26%), 410 images/s, ETA 36 s` for a long loop.

    Silent for the first `delay` seconds, so quick jobs print nothing. On a terminal the line is
    redrawn in place (carriage return) at most every `redraw` seconds; into a file or pipe it is a
    plain line every `every` seconds, never a carriage return. Use it as a context manager and
    call update(done) as work gets done.
    """

    def __init__(self, what, total, unit="images", stream=None, delay=2.0, every=15.0, redraw=0.2):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.delay, self.interval = delay, redraw if self.tty else every
        self.start = time.monotonic()
        self.shown_at = None  # when the line was last shown; None: not yet
        self.width = 0  # of the line on the terminal, to blank out a longer earlier one
        self.done = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, done):
        self.done = done
        now = time.monotonic()
        if now - self.start >= self.delay and (self.shown_at is None or now - self.shown_at >= self.interval):
            self._show(now)

    def close(self):
        """On a terminal, redraw the line with the final count and end it, so that the next output
        starts on a line of its own."""
        if self.tty and self.shown_at is not None:
            self._show(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _show(self, now):
        self.shown_at = now
        done, elapsed = self.done, now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {minutes((self.total - done) / rate)}" if rate and done < self.total else ""
        line = (f"{self.what}: {done:,} of {self.total:,} {self.unit} ({done / max(self.total, 1):.0%}), "
                f"{rate:,.0f} {self.unit}/s{eta}")
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def keras_verbosity(quiet):
    """Keras fit's verbose: a progress bar on a terminal, one line per epoch into a file or pipe."""
    # Keras' own "auto" always means the bar, whose redraws fill a log file with control characters
    # (its docs recommend 2 when not interactive).
    return 0 if quiet else "auto" if sys.stdout.isatty() else 2
