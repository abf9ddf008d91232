"""``bench --tune``: the ONNX Runtime session options worth trying, measured in short interleaved rounds, and the
fastest kept only where the samples confirm it beats the options given."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.bench.config import BenchConfig
from cnnkit.bench.result import TuneTrial
from cnnkit.bench.timing import Prepared, prepare, time_slice
from cnnkit.choices import CudnnConvAlgoSearch, ExecutionMode, GraphOptimization
from cnnkit.envinfo import cpu_info
from cnnkit.errors import CnnkitError
from cnnkit.graph.info import OnnxModelInfo
from cnnkit.runtimes.registry import RuntimeChoice
from cnnkit.runtimes.sessions import SessionConfig
from cnnkit.stats import fastest_confirmed


def tune_candidates(base: SessionConfig, on_gpu: bool) -> list[SessionConfig]:
    """ONNX Runtime session options worth trying on the provider that runs (``on_gpu``: CUDA's options, else
    the CPU's); the base configuration is always among them."""
    replace = dataclasses.replace
    out = [base]
    if on_gpu:
        out += [replace(base, cudnn_conv_algo_search=algo, cuda_graph=graph)
                for algo in CudnnConvAlgoSearch for graph in (False, True)]
        return list(dict.fromkeys(out))
    cores = cpu_info()["usable_cores"] or 1
    for threads in range(1, cores + 1):
        for spin in (True, False):
            for level in (GraphOptimization.ALL, GraphOptimization.EXTENDED):
                out.append(replace(base, intra_op_threads=threads, allow_spinning=spin, graph_optimization=level))
    if cores > 1:
        for spin in (True, False):
            out.append(replace(base, intra_op_threads=cores, inter_op_threads=cores, allow_spinning=spin,
                               execution_mode=ExecutionMode.PARALLEL))
    return list(dict.fromkeys(out))


def _tune_options(c: SessionConfig) -> dict[str, Any]:
    keys = ("intra_op_threads", "inter_op_threads", "allow_spinning", "graph_optimization", "execution_mode",
            "cudnn_conv_algo_search", "cuda_graph")
    d = c.to_dict()
    return {k: d[k] for k in keys}


def session_flags(options: dict[str, Any], on_gpu: bool) -> str:
    """The ``cnnkit bench`` flags that select these session options (a tune trial's ``options``)."""
    flags = [f"--threads {options['intra_op_threads']}"]
    if options.get("inter_op_threads"):
        flags.append(f"--inter-op-threads {options['inter_op_threads']}")
    if options.get("allow_spinning") is not None:
        flags.append("--spinning" if options["allow_spinning"] else "--no-spinning")
    flags += [f"--graph-optimization {options['graph_optimization']}", f"--execution-mode {options['execution_mode']}"]
    if on_gpu:
        flags.append(f"--cudnn-conv-algo-search {str(options['cudnn_conv_algo_search']).lower()}")
        if options.get("cuda_graph"):
            flags.append("--cuda-graph")
    return " ".join(flags)


TUNE_ROUNDS = 10  # short paired rounds: on a shared machine the speed drifts over seconds


def tune_batch(model: Path, choice: RuntimeChoice, info: OnnxModelInfo, batch_size: int, plan: list[SessionConfig],
                config: BenchConfig, rng: Any, step: Callable[[str], None]) -> tuple[SessionConfig, list[TuneTrial]]:
    """Measure every candidate at one batch size and pick the options to use.

    All candidates are prepared first, then timed in ``TUNE_ROUNDS`` shuffled rounds on quiet cores; see
    :func:`cnnkit.stats.fastest_confirmed` for the choice. (Timed one after the other, candidates meet different
    states of a shared machine, and a short trial crowns one by luck: seen here, two identical configurations
    28 % apart.)
    """
    name = Path(model).name
    trials: list[TuneTrial] = []
    entries: list[tuple[SessionConfig, Prepared]] = []
    failure: CnnkitError | None = None
    for candidate in plan:
        step(f"tuning {name} batch {batch_size}: sessions")
        try:
            entries.append((candidate, prepare(model, choice, info, batch_size, candidate, config)))
        except CnnkitError as exc:
            # A candidate this provider cannot run (e.g. a CUDA graph with nodes left on the CPU) is a recorded
            # result of the search, not the end of it.
            failure = exc
            trials.append(TuneTrial(str(model), batch_size, _tune_options(candidate), None, 0, error=exc.one_line()))
    if not entries:
        assert failure is not None
        raise failure
    samples: list[list[int]] = [[] for _ in entries]
    round_medians = np.zeros((len(entries), TUNE_ROUNDS))
    order = list(range(len(entries)))
    for r in range(TUNE_ROUNDS):
        rng.shuffle(order)
        for i in order:
            step(f"tuning {name} batch {batch_size}")
            got = time_slice(entries[i][1].timed.run, 3, config.tune_time_s / TUNE_ROUNDS)
            samples[i] += got
            round_medians[i, r] = np.median(got)
    base_i = next((i for i, (c, _) in enumerate(entries) if c == plan[0]), None)
    chosen = fastest_confirmed(round_medians, base_i, config.seed)
    for i, ((candidate, _), got) in enumerate(zip(entries, samples, strict=True)):
        ratio = float(np.median(round_medians[i] / round_medians[base_i])) if base_i is not None else None
        trials.append(TuneTrial(str(model), batch_size, _tune_options(candidate), float(np.median(got)) / 1e6, len(got),
                                ratio_to_base=ratio, chosen=i == chosen))
    options = entries[chosen][0]
    entries.clear()  # release the sessions (and their thread pools) before the measurement proper
    return options, trials
