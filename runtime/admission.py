"""Admission control and deadline-bounded, batched inference for the pose server.

One request cannot starve the others nor outlive its timeout:

- `Admission` lets at most `limit` requests decode and infer at once; the next one is answered
  503 (`Overloaded`) at once instead of queueing without bound.
- `predict_in_batches` decodes the image and runs the people of a request in batches of at most
  `batch_crops` crops (flip counted), each batch one job on the shared inference thread pool.
  Requests therefore take turns on the pool batch by batch (its queue is first-in first-out), a
  small request waits for at most one batch of each running request, and memory per request is
  one batch whatever its box count. Before each batch, and while waiting for one, the request's
  deadline is checked: past it the request stops (`DeadlineExceeded`, 504), a batch not yet
  started is dropped, and a job already running stops at its next `check_deadline`
  (runtime.deadline: between HOG pyramid levels and person crops), so whole-image work is
  abandoned with the request.
- `read_within` bounds the time a request's body may take to arrive (`BodyTimeout`, 408); the
  server reads bodies only once a request holds an admission slot, so at most `limit` bodies are
  in memory at once.

To change the scheduling (e.g. priorities), replace the `run` callable given to
`predict_in_batches`; the batching and deadline checks stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import contextmanager
from typing import Awaitable, Callable

import numpy as np

from lbdeploy.errors import LbdeployError
from lbdeploy.transforms import load_image
from lbdeploy.runtime.deadline import DeadlineExceeded, late, run_until
from lbdeploy.runtime.tasks.pose import PoseResult

__all__ = ["Admission", "BodyTimeout", "DeadlineExceeded", "Overloaded", "predict_in_batches", "predict_whole_image",
           "read_within"]


class Overloaded(LbdeployError):
    """The server already runs as many requests as it admits (HTTP 503; retry later)."""

    http_status = 503
    headers = {"Retry-After": "1"}


class BodyTimeout(LbdeployError):
    """A request's body did not arrive within the server's timeout (HTTP 408)."""

    http_status = 408


class Admission:
    """At most `limit` admitted requests at a time; used from one event loop (no locking).

    Args:
        limit: requests admitted at once (running or waiting for the thread pool).
    """

    def __init__(self, limit: int):
        self.limit, self.active = max(1, int(limit)), 0

    @contextmanager
    def slot(self):
        """Hold one slot for the body of the `with` block.

        Raises:
            Overloaded: all slots are taken.
        """
        if self.active >= self.limit:
            raise Overloaded(f"the server is busy with {self.active} requests (its limit); retry in a moment")
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


def _merge(parts: list[PoseResult]) -> PoseResult:
    """One result of the people of several batches: every per-person array concatenated in order."""
    if len(parts) == 1:
        return parts[0]
    merged = {}
    for item in dataclasses.fields(PoseResult):
        values = [getattr(part, item.name) for part in parts]
        if item.name == "image_size":
            merged[item.name] = values[0]
        else:
            merged[item.name] = None if values[0] is None else np.concatenate(values)
    return PoseResult(**merged)


async def read_within(reading: Awaitable, timeout_s: float):
    """Await `reading` (the request body being received) for at most `timeout_s` seconds.

    Raises:
        BodyTimeout: the body had not fully arrived in time.
    """
    try:
        return await asyncio.wait_for(reading, timeout=timeout_s)
    except asyncio.TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout_s:g} s; send it faster "
                          "or send a smaller image") from None


async def _within(job: Callable, run: Callable, deadline: float, timeout_s: float):
    """Run `job` through `run` unless the deadline has passed; stop waiting for it at the deadline
    (the job itself stops at its next `check_deadline`)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise late(timeout_s)
    future = run(lambda: run_until(job, deadline, timeout_s))
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout=remaining)
    except asyncio.TimeoutError:
        future.cancel()  # a job that has not started yet is dropped; a running one stops at its next check
        raise late(timeout_s) from None


async def predict_in_batches(predictor, data: bytes, boxes, flip: bool, return_heatmaps: bool,
                             run: Callable, batch_crops: int, timeout_s: float,
                             deadline: float | None = None) -> PoseResult:
    """Decode `data` and estimate the people of `boxes` batch by batch, within `timeout_s`.

    Args:
        predictor: a runtime.predictor.Predictor.
        data: the encoded image.
        boxes: checked (x, y, w, h) boxes, or None for the whole image.
        flip: run the flip test (each person is two crops).
        return_heatmaps: keep the heatmaps in the result.
        run: `run(job) -> asyncio future` running a no-argument callable on the inference pool.
        batch_crops: most crops per backend call.
        timeout_s: time limit from this call on.
        deadline: the time.monotonic() value to stop at instead (e.g. from the request's admission).

    Returns:
        The PoseResult of all people, in box order (as `predictor.predict` would give).

    Raises:
        InputError: an unreadable or too large image; DeadlineExceeded: past the time limit.
    """
    deadline = time.monotonic() + timeout_s if deadline is None else deadline
    pixels = await _within(lambda: load_image(data, predictor.max_pixels), run, deadline, timeout_s)
    step = max(1, batch_crops // (2 if flip else 1))
    batches = [boxes] if not boxes else [boxes[i:i + step] for i in range(0, len(boxes), step)]
    parts = []
    for batch in batches:
        parts.append(await _within(
            lambda batch=batch: predictor.predict(pixels, boxes=batch, flip=flip, return_heatmaps=return_heatmaps),
            run, deadline, timeout_s))
    return _merge(parts)


async def predict_whole_image(predictor, data: bytes, run: Callable, timeout_s: float,
                              deadline: float | None = None, present: Callable | None = None):
    """Decode `data` and run `predictor.predict(pixels)` on the whole image (one backend call, e.g. a
    saliency map), then `present(result)` (e.g. PNG encoding), each step one job through `run`,
    within `timeout_s` (or until `deadline`, a time.monotonic() value), so no step runs on the event loop.

    Returns:
        What `present` returns (`predictor.predict`'s result without it).
    Raises:
        InputError: an unreadable or too large image; DeadlineExceeded: past the time limit.
    """
    deadline = time.monotonic() + timeout_s if deadline is None else deadline
    pixels = await _within(lambda: load_image(data, predictor.max_pixels), run, deadline, timeout_s)
    result = await _within(lambda: predictor.predict(pixels), run, deadline, timeout_s)
    return result if present is None else await _within(lambda: present(result), run, deadline, timeout_s)
