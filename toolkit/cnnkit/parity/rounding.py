"""A model's own float32 rounding floor: how far its outputs move between two equally valid builds of it.

ONNX Runtime with all graph optimisations (fusions, reordered sums) and with none compute the same function;
what separates them is float32 rounding of this very model, which grows with depth. A deep network differs
from Keras by more than the seed CNN's 1.2e-6 without any error in the export, so a Keras-vs-ONNX tolerance is
at least ``ROUNDING_HEADROOM`` times this floor. Parity (the precision gate) and export (the check that a
conversion route works) both measure it here.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from cnnkit.runtimes.base import run_batched
from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner
from cnnkit.runtimes.sessions import SessionConfig

ROUNDING_HEADROOM = 4  # Keras vs ONNX atol: at least this many times the model's own rounding floor
BATCH = 64  # images per run


def rounding_floor(model: str | os.PathLike[str] | bytes, x: np.ndarray, session: SessionConfig | None = None,
                   label: str | None = None) -> tuple[float, dict[str, np.ndarray]]:
    """The largest finite |difference| between the model's outputs on ``x`` with all and with no graph
    optimisations (0.0 when none is finite), and the outputs with all of them (what cnnkit runs).

    ``session``: the session settings besides the optimisation level (default: CPU).
    """
    from cnnkit.choices import GraphOptimization

    session = session or SessionConfig()
    outs = [run_batched(create_runner(DEFAULT_RUNTIME, model, replace(session, graph_optimization=level), label=label),
                        x, BATCH)
            for level in (GraphOptimization.ALL, GraphOptimization.DISABLE)]
    floor = 0.0
    for name, a in outs[0].items():
        d = np.abs(a.astype(np.float64) - outs[1][name].astype(np.float64))
        if np.isfinite(d).any():
            floor = max(floor, float(np.nanmax(np.where(np.isfinite(d), d, np.nan))))
    return floor, outs[0]
