"""Test hooks: stop a trial process at a named point, so that tests kill or pause it in a chosen
window (e.g. between a backup and the epoch's logs) instead of at a random moment.

    TRIAL_KILL_AT=NAME:N          the process SIGKILLs itself the Nth time it reaches point NAME
    TRIAL_PAUSE_AT=NAME:N:FILE    it creates FILE.PID there (PID: its process id) and waits until the
                                  test deletes that file (it goes on) or ends the process
    TRIAL_KILL_ATTEMPTS=K         (Ray) TRIAL_KILL_AT acts only in a trial's first K attempts

The points are counted per process; a Ray worker process counts them per trial (`install`).
"""

import os
import signal
import time
from pathlib import Path

KILL_AT_ENV = "TRIAL_KILL_AT"
PAUSE_AT_ENV = "TRIAL_PAUSE_AT"
KILL_ATTEMPTS_ENV = "TRIAL_KILL_ATTEMPTS"
ENVIRONMENT = (KILL_AT_ENV, PAUSE_AT_ENV, KILL_ATTEMPTS_ENV)

_reached = {}


def point(name):
    """A named point in a trial: kill or pause here if the environment asks for it."""
    _reached[name] = _reached.get(name, 0) + 1
    target, _, count = os.environ.get(KILL_AT_ENV, "").partition(":")
    if target == name and _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
    target, _, rest = os.environ.get(PAUSE_AT_ENV, "").partition(":")
    count, _, flag = rest.partition(":")
    if target == name and _reached[name] == int(count or 1):
        paused = Path(f"{flag}.{os.getpid()}")  # one file per process: several trials may pause at once
        paused.touch()
        while paused.exists():
            time.sleep(0.05)


def reset():
    """Count the points afresh: a new trial starts."""
    _reached.clear()


def requested():
    """{variable: value} of the hooks set in this process's environment, to hand to worker processes."""
    return {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}


def install(hooks, attempt):
    """In a worker process, before trial attempt number `attempt` (1 first): the driver's hooks,
    TRIAL_KILL_AT only while attempt <= TRIAL_KILL_ATTEMPTS, and the point counts reset."""
    for name in ENVIRONMENT:
        os.environ.pop(name, None)
        if name in hooks:
            os.environ[name] = hooks[name]
    if attempt > int(hooks.get(KILL_ATTEMPTS_ENV, 1 << 30)):
        os.environ.pop(KILL_AT_ENV, None)
    reset()
