"""Where ``cnnkit bench`` runs, as its config says (``BenchConfig.engine``): in this process, or the same
benchmark on every selected node of a Ray cluster. Ray is imported only for the latter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cnnkit.bench.benchmark import (
    BenchConfig,
    BenchResult,
    ProgressCallback,
    run_benchmark,
)

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
