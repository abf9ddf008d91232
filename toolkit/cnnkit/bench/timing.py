"""The timed loop: every call timed on its own with ``time.perf_counter_ns`` until both a minimum count and a
minimum time are met, on quiet cores; a runner prepared for one batch size (built, first call timed and checked,
warmed up); the harness's own overhead against a bare ``session.run`` loop."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.bench.config import BenchConfig
from cnnkit.bench.inputs import make_input
from cnnkit.graph.info import OnnxModelInfo, describe_onnx
from cnnkit.runtimes.base import Runner, TimedCall
from cnnkit.runtimes.registry import RuntimeChoice, create_runner
from cnnkit.runtimes.sessions import SessionConfig


def time_calls(run: Callable[[], Any], warmup: int, min_iterations: int, min_time_s: float) -> list[int]:
    """Warm up, then time each call of ``run`` on its own until both minimums are met. Samples in ns."""
    for _ in range(warmup):
        run()
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    deadline = clock() + int(min_time_s * 1e9)
    while len(samples) < min_iterations or clock() < deadline:
        t0 = clock()
        run()
        append(clock() - t0)
    return samples


def wait_for_quiet(max_wait_s: float = 0.5, window_s: float = 0.02, busy_cores: float = 0.1) -> float:
    """Sleep until this process stops using the CPU (at most ``max_wait_s``); return the seconds waited.

    Interleaving runners is only fair if each starts on idle cores: after a session goes idle, ONNX Runtime's
    spinning pool threads keep a core busy for another ~50-100 ms (measured here), and so may other runtimes'
    pools. Process CPU time counts every thread, so a window with less than ``busy_cores`` of it is quiet.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        if (time.process_time() - cpu0) / (time.perf_counter() - t0) < busy_cores:
            break
    return time.perf_counter() - start


def time_slice(run: Callable[[], Any], min_iterations: int, min_time_s: float, warmup: int = 3) -> list[int]:
    """One runner's turn in an interleaved round: wait for quiet cores, wake the runner, then time it."""
    wait_for_quiet()
    return time_calls(run, warmup, min_iterations, min_time_s)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


@dataclass
class Prepared:
    """A runner built for one batch size, its timed call and the first call's time."""

    runner: Runner
    timed: TimedCall
    first_ms: float


def prepare(model: Path, choice: RuntimeChoice, info: OnnxModelInfo, batch_size: int, session_config: SessionConfig,
             config: BenchConfig) -> Prepared:
    """A fresh runner (its build timed by the runner), its first inference timed and checked, then warmed up.

    Every runtime is fed the same seeded input (:func:`make_input`: the model's own layout and dtype)."""
    runner = create_runner(choice, model, session_config, config.tflite, batch_size=batch_size)
    timed = runner.timed_call(make_input(info, batch_size, config.seed), config.include_copies)
    t0 = time.perf_counter_ns()
    timed.run()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    check_outputs_finite(model, batch_size, timed.outputs())  # its buffers, copied to the host once
    for _ in range(config.warmup):
        timed.run()
    return Prepared(runner, timed, first_ms)


def check_outputs_finite(model: Path, batch_size: int, outputs: dict[str, Any]) -> None:
    """Timing a model whose outputs hold NaN or Inf would measure a broken model: fail before any timing."""
    from cnnkit.finite import NonFiniteError, nonfinite

    bad = [(name, nf) for name, out in outputs.items() if (nf := nonfinite(out)) is not None]
    if bad:
        found = "; ".join(f"output {name}: {nf.describe()}" for name, nf in bad)
        raise NonFiniteError(f"{Path(model).name} at batch {batch_size}, first (warm-up) call on the seeded input: {found}",
                             hint="the model is broken for these inputs (pixel values 0..255); fix it before timing it")


@dataclass(frozen=True)
class OverheadResult:
    """The harness against a bare ``session.run`` loop on the same session, interleaved."""

    batch_size: int
    harness_p50_ms: float
    bare_p50_ms: float
    rounds: int

    @property
    def overhead(self) -> float:
        """Relative: 0.02 means the harness's median is 2 % above the bare loop's."""
        return self.harness_p50_ms / self.bare_p50_ms - 1.0


def measure_overhead(model: Path, batch_size: int = 1, rounds: int = 10, round_time_s: float = 0.2,
                     session: SessionConfig | None = None) -> OverheadResult:
    """Alternate rounds of the harness's timing loop and of a bare loop, so drift hits both alike."""
    info = describe_onnx(model)
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(model, session or SessionConfig(intra_op_threads=1))
    sess = runner.session  # the bare loop is ONNX Runtime's own
    x = make_input(info, batch_size, 0)
    run = runner.timed_call(x).run
    feeds = {info.input_name: x}
    harness: list[int] = []
    bare: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(20):
        sess.run(None, feeds)
    for _ in range(rounds):
        harness += time_calls(run, warmup=0, min_iterations=1, min_time_s=round_time_s)
        deadline = clock() + int(round_time_s * 1e9)
        while clock() < deadline:  # what a user would write by hand
            t0 = clock()
            sess.run(None, feeds)
            bare.append(clock() - t0)
    return OverheadResult(batch_size, float(np.median(harness)) / 1e6, float(np.median(bare)) / 1e6, rounds)
