"""Latency and throughput of ONNX models in ONNX Runtime, measured honestly.

Method: inputs are generated before timing; each input shape is warmed up on its own (a new shape costs
extra, on CUDA a lot); every inference is timed on its own with ``time.perf_counter_ns`` and kept; timing
runs until both a minimum count and a minimum time are met. What is timed is the runner's own timed call
(:meth:`cnnkit.runtimes.base.Runner.timed_call`): on a GPU the inputs and outputs are bound on the device
(IO binding), so host<->device copies are measured only with ``include_copies``. Statistics are
derived from the kept samples; every result carries the environment it was measured in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cnnkit.bench.config import BenchConfig
from cnnkit.bench.defaults import FITTED, resolve_defaults
from cnnkit.bench.extras import extra_steps, measure_extras
from cnnkit.bench.inputs import input_record
from cnnkit.bench.result import SCHEMA, BenchCase, BenchResult, SkippedCase, TuneTrial
from cnnkit.bench.timing import peak_rss_mb, prepare, time_slice
from cnnkit.bench.tune import TUNE_ROUNDS, tune_batch, tune_candidates
from cnnkit.envinfo import environment, gpu_info
from cnnkit.errors import CnnkitError
from cnnkit.graph.info import OnnxModelInfo, describe_onnx
from cnnkit.runtimes.base import runtime_versions
from cnnkit.runtimes.registry import RuntimeChoice, create_runner
from cnnkit.runtimes.sessions import SessionConfig
from cnnkit.stats import LatencyStats


ProgressCallback = Callable[[str, int, int], None]  # (what is being measured, steps done, steps in all)


def run_benchmark(config: BenchConfig, progress: ProgressCallback | None = None, rounds: int = 5) -> BenchResult:
    """Benchmark every model at every batch size (tuning the session options first with ``tune``).

    With several models, each batch size is measured in ``rounds`` alternating rounds (in shuffled order), so
    that drift of a shared machine hits every model alike; the minimum time and count are split over them.
    Options left as None are fitted to the models (:func:`resolve_defaults`); a fixed-batch model is measured
    at the batch sizes it takes and the others are recorded in ``skipped``.
    """
    import random

    entries = config.entries()
    described = {m: describe_onnx(m) for m in config.models}  # fail on a bad file before measuring anything
    infos = [described[m] for m, _ in entries]
    check_runtimes(config)
    given_batches = config.batch_sizes is not None
    ort = next(((m, c) for m, c in entries if c.runtime == "onnxruntime"), None)
    ran = None  # the device the session provider really runs on decides whether the CPU fit applies
    if ort is not None and any(getattr(config, f) is None for f in FITTED):
        ran = create_runner(ort[1], ort[0], config.session).info
    config, fitted = resolve_defaults(config, ran)
    assert config.batch_sizes is not None and config.warmup is not None
    assert config.min_time_s is not None and config.min_iterations is not None
    batch_sizes = list(config.batch_sizes)
    if not given_batches:  # a fixed-batch model is measured at its own batch, whatever the fit chose
        batch_sizes = sorted(set(batch_sizes) | {i.input.batch for i in described.values() if i.input and i.input.batch})
        config = dataclasses.replace(config, batch_sizes=tuple(batch_sizes))
    ways_out = {m: _batch_way_out(m) for m, info in described.items() if info.input is not None and info.input.batch}
    skipped = [SkippedCase(str(m), b, _batch_refusal(m, info, b), ways_out[m])
               for b in batch_sizes for m, info in described.items()
               if info.input is not None and not info.input.accepts_batch(b)]
    refused = {(s.model, s.batch_size) for s in skipped}
    if all((str(m), b) in refused for m in config.models for b in batch_sizes):
        first = skipped[0]
        raise CnnkitError(f"nothing to measure: {first.reason}", hint=first.hint)
    plans: list[list[SessionConfig]] = []
    for model, choice in entries:
        if config.tune and choice.runtime == "onnxruntime":  # the session options tuned are ONNX Runtime's
            probe = create_runner(choice, model, config.session)  # the provider that really runs sets the search
            plans.append(tune_candidates(config.session, probe.info.on_gpu))
            del probe
        else:
            plans.append([])

    def runs_at(b: int) -> list[int]:
        """The entries measured at batch size ``b``."""
        return [i for i, (m, _) in enumerate(entries) if (str(m), b) not in refused]

    def rounds_at(b: int) -> int:
        return config.rounds if len(runs_at(b)) > 1 else 1

    total = sum(sum(len(plans[i]) * (1 + TUNE_ROUNDS) for i in runs_at(b)) + len(runs_at(b)) * (rounds_at(b) + 1)
                for b in batch_sizes) + extra_steps(config)
    done = 0

    def step(what: str) -> None:
        nonlocal done
        if progress:
            progress(what, done, total)
        done += 1

    measured: list[tuple[int, BenchCase]] = []  # (entry index, case)
    trials: list[TuneTrial] = []
    rng = random.Random(config.seed)
    for b in batch_sizes:
        here = runs_at(b)
        rounds_b = rounds_at(b)
        chosen: list[SessionConfig] = []
        for i in here:
            if not plans[i]:
                chosen.append(config.session)
                continue
            options, tried = tune_batch(entries[i][0], entries[i][1], infos[i], b, plans[i], config, rng, step)
            trials += tried
            chosen.append(options)
        # One session per model, created and first-run timed, warmed up; then the alternating rounds.
        prepared = []
        for i, session_config in zip(here, chosen, strict=True):
            (model, choice), info = entries[i], infos[i]
            step(f"{_entry_name(model, choice)} batch {b}: session")
            prepared.append(prepare(model, choice, info, b, session_config, config))
        samples: list[list[int]] = [[] for _ in prepared]
        round_p50: list[list[float]] = [[] for _ in prepared]
        order = list(range(len(prepared)))
        for _ in range(rounds_b):
            rng.shuffle(order)
            for k in order:
                step(f"{_entry_name(*entries[here[k]])} batch {b}")
                got = time_slice(prepared[k].timed.run, max(1, -(-config.min_iterations // rounds_b)),
                                 config.min_time_s / rounds_b)
                samples[k] += got
                round_p50[k].append(float(np.median(got)) / 1e6)
        for k, (i, prep, got) in enumerate(zip(here, prepared, samples, strict=True)):
            (model, choice), info, ran = entries[i], infos[i], prep.runner.info
            measured.append((i, BenchCase(
                model=str(model), model_sha256=info.sha256, precision=ran.precision, batch_size=b,
                provider=ran.provider_record(), stats=LatencyStats.from_samples(got, b), samples_ns=tuple(got),
                warmup=config.warmup, session_create_ms=prep.runner.build_ms, first_inference_ms=prep.first_ms,
                peak_rss_mb=peak_rss_mb(), io_binding=prep.timed.io_binding, include_copies=config.include_copies,
                tuned=bool(plans[i]), runtime=ran.runtime, round_p50_ms=tuple(round_p50[k]),
            )))
        prepared.clear()  # release this batch size's sessions (and their thread pools) before the next
    measured.sort(key=lambda item: (item[0], item[1].batch_size))  # entry by entry, as given
    cases = [case for _, case in measured]
    extra = measure_extras(config, [described[m] for m in config.models], step)  # apart from the timed runs
    if progress:
        progress("done", total, total)
    return BenchResult(
        schema=SCHEMA,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config={
            "models": [str(m) for m in config.models], "batch_sizes": batch_sizes,
            "fitted_defaults": fitted.to_dict() if fitted is not None else None,
            "session": config.session.to_dict(), "warmup": config.warmup, "min_time_s": config.min_time_s,
            "min_iterations": config.min_iterations, "include_copies": config.include_copies, "tune": config.tune,
            "interleaved_rounds": config.rounds if len(entries) > 1 else 1, "runtimes": [r.label for r in config.runtimes],
            "tflite": str(config.tflite) if config.tflite else None,
            "tune_time_s": config.tune_time_s, "seed": config.seed, "clock": "time.perf_counter_ns",
            "profile": config.profile, "profile_runs": config.profile_runs, "memory": config.memory,
            "memory_runs": config.memory_runs, "cold_starts": config.cold_starts,
            "concurrency": list(config.concurrency),
            "preprocess": {str(m): input_record(i).to_dict() for m, i in described.items() if i.input is not None},
        },
        environment=environment() | {"gpu": gpu_info(), "runtimes": runtime_versions()},
        cases=tuple(cases),
        trials=tuple(trials),
        profiles=extra.profiles, memory=extra.memory, cold_start=extra.cold_start, concurrency=extra.concurrency,
        skipped=tuple(skipped),
    )


def _entry_name(model: Path, choice: RuntimeChoice) -> str:
    return f"{Path(model).name} [{choice.label}]"


def check_runtimes(config: BenchConfig) -> None:
    """Every runtime importable and every .tflite present before anything is measured (one-line errors)."""
    from cnnkit.runtimes.base import require_runtime
    from cnnkit.runtimes.registry import tflite_path

    for choice in config.runtimes:
        require_runtime(choice.runtime)
        if choice.runtime == "litert":
            for model in config.models:
                tflite_path(model, config.tflite)


def _batch_refusal(model: Path, info: OnnxModelInfo, batch_size: int) -> str:
    """Why ``model`` is not measured at ``batch_size``."""
    assert info.input is not None and info.input.batch is not None
    return (f"{Path(model).name} takes a fixed batch of {info.input.batch} (input {info.input.name} "
            f"{list(info.input.shape)}), not {batch_size}")


def _batch_way_out(model: Path) -> str:
    """How to measure a fixed-batch model at other batch sizes: ``--make-batch-dynamic`` where the graph scan
    finds it safe, else why not and a new export."""
    from cnnkit.export.batch import batch_rewrite_blocker
    from cnnkit.graph.info import MAKE_DYNAMIC_HINT, load_onnx

    blocker = batch_rewrite_blocker(load_onnx(model), Path(model).name)
    if blocker is None:
        return f"to measure other batch sizes, make the batch dynamic: {MAKE_DYNAMIC_HINT.format(model=model)}"
    return f"to measure other batch sizes, export the model again with a dynamic batch ({blocker})"
