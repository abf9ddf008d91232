"""The measurements ``cnnkit bench`` makes beside latency: operator profile, memory, cold start, concurrency.

Each runs apart from the timed latency runs (its own session, process or window), so none of them feeds
the latency statistics. See :mod:`cnnkit.bench.profile`, :mod:`cnnkit.bench.memory`, :mod:`cnnkit.bench.concurrency`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.bench.concurrency import ConcurrencyPoint, measure_concurrency
from cnnkit.bench.inputs import make_input
from cnnkit.bench.memory import ColdStartResult, MemoryResult, measure_in_child, summarize_cold_start, summarize_memory
from cnnkit.bench.profile import OperatorProfile, profile_model
from cnnkit.envinfo import cpu_info
from cnnkit.graph.info import OnnxModelInfo

if TYPE_CHECKING:
    from cnnkit.bench.config import BenchConfig


@dataclasses.dataclass(frozen=True)
class ExtraMeasurements:
    profiles: tuple[OperatorProfile, ...] = ()
    memory: tuple[MemoryResult, ...] = ()
    cold_start: tuple[ColdStartResult, ...] = ()
    concurrency: tuple[ConcurrencyPoint, ...] = ()


def extra_steps(config: BenchConfig) -> int:
    """How many progress steps :func:`measure_extras` reports."""
    per_model = 0
    if config.profile:
        per_model += len(config.batch_sizes)
    per_model += _children(config, config.session.cpu_mem_arena) + (_children(config, not config.session.cpu_mem_arena)
                                                                   if config.memory else 0)
    per_model += len(config.batch_sizes) * len(config.concurrency)
    return per_model * len(config.models)


def _children(config: BenchConfig, arena: bool) -> int:
    """Fresh processes to start per model with this arena setting: cold starts use the configured one."""
    if arena == config.session.cpu_mem_arena:
        return max(config.cold_starts, 1 if config.memory else 0)
    return 1 if config.memory else 0


def measure_extras(config: BenchConfig, infos: list[OnnxModelInfo], step: Callable[[str], None]) -> ExtraMeasurements:
    """Everything ``config`` asks for beside latency, model by model."""
    profiles: list[OperatorProfile] = []
    memory: list[MemoryResult] = []
    cold: list[ColdStartResult] = []
    points: list[ConcurrencyPoint] = []
    cores = cpu_info()["usable_cores"] or 1
    for model, info in zip(config.models, infos, strict=True):
        name = Path(model).name
        # A fixed-batch model takes its own batch only (the others are in the result's ``skipped``).
        batches = [b for b in config.batch_sizes if info.input is None or info.input.accepts_batch(b)]
        if config.profile:
            for b in batches:
                step(f"{name} batch {b}: operator profile")
                profiles.append(profile_model(model, config.session, make_input(info, b, config.seed), info.input_name,
                                              runs=config.profile_runs))
        for arena in (config.session.cpu_mem_arena, not config.session.cpu_mem_arena):
            session = dataclasses.replace(config.session, cpu_mem_arena=arena).to_dict()
            kids = []
            for i in range(_children(config, arena)):
                step(f"{name}: fresh process {i + 1} (arena {'on' if arena else 'off'})")
                kids.append(measure_in_child(
                    model, session, _sample_shape(info), make_input(info, batches[0], config.seed).dtype.name,
                    info.input_name, batches if config.memory else (), min(batches), config.memory_runs, config.seed))
            if not kids:
                continue
            if config.memory:
                memory.append(summarize_memory(str(model), kids, config.memory_runs))
            if arena == config.session.cpu_mem_arena and config.cold_starts:
                cold.append(summarize_cold_start(str(model), kids))
        for b in batches:
            x = make_input(info, b, config.seed)
            for n in config.concurrency:
                step(f"{name} batch {b}: {n} in flight")
                points.append(measure_concurrency(model, config.session, x, info.input_name, n, cores,
                                                  min_time_s=config.min_time_s, min_requests=config.min_iterations))
    return ExtraMeasurements(tuple(profiles), tuple(memory), tuple(cold), tuple(points))


def _sample_shape(info: OnnxModelInfo) -> tuple[int, ...]:
    """One input sample in the model's own layout (the child process feeds the session directly)."""
    return tuple(info.input.model_shape(1)[1:]) if info.input is not None else tuple(info.image_shape)
