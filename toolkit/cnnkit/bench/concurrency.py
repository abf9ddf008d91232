"""Throughput under load: N requests in flight on one session, as a server would run them.

N Python threads share one ONNX Runtime runner (its ``infer`` is one ``InferenceSession.run``, which is
thread-safe and releases the GIL while it runs): requests come from the host and their outputs go back to it. Each thread sends its next request as soon as the last one returns, and times
each request on its own. images/s is the images completed over the wall time of the timed window;
the latency percentiles are those of every request in that window. Unless the user sets ``--threads``,
one request in flight gets ONNX Runtime's default intra-op threads (as the latency runs) and N > 1 get
``cores // N`` each (at least 1), so N x threads stays within the cores; when it cannot, or the user's
choice exceeds the cores, the result says so (``oversubscribed``).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner
from cnnkit.runtimes.sessions import SessionConfig

SATURATION_GAIN = 0.05  # a level that adds less than 5 % images/s over the last one has stopped growing


@dataclass(frozen=True)
class ConcurrencyPoint:
    """One model, batch size and number of requests in flight."""

    model: str
    batch_size: int
    streams: int  # requests in flight
    intra_op_threads: int
    oversubscribed: bool  # streams x intra-op threads exceeds the usable cores
    images_per_s: float
    requests: int
    wall_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def threads_for(streams: int, requested: int, cores: int) -> tuple[int, bool]:
    """Intra-op threads per session (0: ONNX Runtime's default, one per physical core, as the latency runs
    use with one request in flight) and whether streams x threads oversubscribes the cores."""
    if requested > 0:
        return requested, streams * requested > cores
    if streams == 1:
        return 0, False
    return max(1, cores // streams), streams > cores


def measure_concurrency(model: str | Path, config: SessionConfig, x: np.ndarray, input_name: str, streams: int,
                        cores: int, min_time_s: float = 1.0, min_requests: int = 20, warmup: int = 3) -> ConcurrencyPoint:
    """Keep ``streams`` requests of batch ``x`` in flight for at least ``min_time_s`` and ``min_requests``."""
    threads, over = threads_for(streams, config.intra_op_threads, cores)
    runner = create_runner(DEFAULT_RUNTIME, model, dataclasses.replace(config, intra_op_threads=threads))
    infer, feeds = runner.infer, {input_name: x}
    for _ in range(warmup):
        infer(feeds)
    per_thread: list[list[int]] = [[] for _ in range(streams)]
    ends: list[int] = [0] * streams
    start_line = threading.Barrier(streams + 1)
    state = {"stop": False}
    min_each = max(1, math.ceil(min_requests / streams))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        clock = time.perf_counter_ns
        got = per_thread[i]
        try:
            infer(feeds)  # each thread's own warm-up
            start_line.wait()
            while not state["stop"] or len(got) < min_each:
                t0 = clock()
                infer(feeds)
                got.append(clock() - t0)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            errors.append(exc)
            start_line.abort()
        ends[i] = time.perf_counter_ns()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(streams)]
    for t in pool:
        t.start()
    try:
        start_line.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter_ns()
    time.sleep(min_time_s)
    state["stop"] = True
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    # The window ends when the last request returns; every request in it was started inside it.
    wall = (max(ends) - t0) / 1e9
    samples = np.concatenate([np.asarray(s, dtype=np.float64) for s in per_thread]) / 1e6
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return ConcurrencyPoint(str(model), int(x.shape[0]), streams, threads, over,
                            float(samples.size * x.shape[0] / wall), int(samples.size), float(wall), float(p50),
                            float(p90), float(p99), float(samples.mean()), float(samples.max()))


def saturation(points: list[ConcurrencyPoint] | list[dict[str, Any]]) -> int | None:
    """The number of requests in flight after which images/s stops growing (by ``SATURATION_GAIN``).

    ``points``: one model and batch size, any order. None where it kept growing up to the largest level
    measured (or only one level was measured).
    """
    rows = sorted(((p["streams"], p["images_per_s"]) if isinstance(p, dict) else (p.streams, p.images_per_s))
                  for p in points)
    if len(rows) < 2:
        return None
    for (n, ips), (_, nxt) in zip(rows, rows[1:]):
        if nxt < ips * (1 + SATURATION_GAIN):
            return n
    return None
