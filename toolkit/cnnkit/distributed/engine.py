"""Where ``cnnkit bench`` and ``cnnkit eval`` run, as their configs say (``engine``): in this process, or on a Ray
cluster (the same benchmark on every selected node; the image folder scored by a pool of workers). Ray is
imported only for the latter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cnnkit.bench.benchmark import ProgressCallback, run_benchmark
from cnnkit.bench.config import BenchConfig
from cnnkit.bench.result import BenchResult
from cnnkit.evaluate.accuracy import EvalConfig, EvalResult, evaluate_models

if TYPE_CHECKING:
    from cnnkit.distributed.fleet import FleetResult


def run_bench(config: BenchConfig, progress: ProgressCallback | None = None,
              notify: Callable[[str], None] | None = None) -> BenchResult | FleetResult:
    """The benchmark ``config`` describes: a :class:`BenchResult` (its ``recommendation`` filled in under
    ``config.recommend``), or with engine ray a :class:`~cnnkit.distributed.fleet.FleetResult`.

    ``progress(what, done, total)``: a total of 0 means not known yet; ``notify(message)``: notes for the user.
    """
    if config.engine == "ray":
        from cnnkit.distributed.fleet import run_fleet_benchmark

        if progress:
            progress("benchmarking on the Ray cluster's nodes", 0, 0)
        return run_fleet_benchmark(config, config.nodes or "all", config.address, notify=notify)
    if config.recommend is not None:
        from cnnkit.bench.recommend import run_recommended

        return run_recommended(config, progress, notify)
    return run_benchmark(config, progress)


def run_eval(config: EvalConfig, progress: Callable[[str, int, int], None] | None = None,
             notify: Callable[[str], None] | None = None) -> EvalResult:
    """The evaluation ``config`` describes: in this process, or with engine ray on the cluster at ``config.address``
    by ``config.workers`` workers (:func:`~cnnkit.distributed.ray_eval.evaluate_on_ray`; its result says so in
    ``engine``). ``progress`` and ``notify`` as for :func:`run_bench`."""
    if config.engine == "ray":
        from cnnkit.distributed.ray_eval import evaluate_on_ray

        return evaluate_on_ray(config, config.address, config.workers, progress=progress, notify=notify)
    return evaluate_models(config, progress=progress, notify=notify)
