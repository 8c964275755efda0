"""Cooperative deadlines: whole-image work (decoding, detection, crops) stops soon after a request's time is up.

The server answers 504 at the deadline without waiting for the thread pool, but a thread cannot
be killed: the job itself must stop. `run_until` runs a job with a deadline attached to the
calling thread, and long-running code calls `check_deadline()` between steps (each HOG pyramid
level, each person crop, ...): past the deadline it raises `DeadlineExceeded`, so an abandoned
job frees its worker thread after at most one step instead of running to the end.

Outside `run_until` (the CLI, the Python API) `check_deadline` does nothing.

    from lbdeploy.runtime.deadline import check_deadline
    for level in levels:
        check_deadline()       # raises DeadlineExceeded once the request's time is up
        work(level)
"""

from __future__ import annotations

import contextvars
import time
from typing import Callable

from lbdeploy.errors import LbdeployError

_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("lbdeploy_deadline",
                                                                                        default=None)


class DeadlineExceeded(LbdeployError):
    """A request ran past the server's timeout and was stopped (HTTP 504)."""

    http_status = 504


def late(timeout_s: float) -> DeadlineExceeded:
    """The error of a request stopped after `timeout_s` seconds."""
    return DeadlineExceeded(f"inference took longer than {timeout_s:g} s; retry, send a smaller image or fewer boxes")


def run_until(job: Callable, deadline: float, timeout_s: float):
    """Run `job()` in this thread with `deadline` (time.monotonic()) attached for `check_deadline`.

    Args:
        job: a no-argument callable.
        deadline: the time.monotonic() value past which the job stops at its next check.
        timeout_s: the request's time limit (for the error message).

    Returns:
        What `job()` returns.

    Raises:
        DeadlineExceeded: the deadline had passed before the job started, or at one of its checks.
    """
    token = _DEADLINE.set((deadline, timeout_s))
    try:
        check_deadline()
        return job()
    finally:
        _DEADLINE.reset(token)


def check_deadline() -> None:
    """Raise DeadlineExceeded when the job running in this thread is past its deadline (no-op without one)."""
    current = _DEADLINE.get()
    if current is not None and time.monotonic() >= current[0]:
        raise late(current[1])
