"""A variant's latency against FP32's, measured interleaved: quantization is measured, not assumed faster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.graph.info import OnnxModelInfo
from cnnkit.runtimes.sessions import SessionConfig


def speed_batches(info: OnnxModelInfo, wanted: tuple[int, ...]) -> tuple[int, ...]:
    """``wanted``, or the model's own batch where it is fixed (it takes no other)."""
    return (info.input.batch,) if info.input is not None and info.input.batch is not None else wanted


def measure_speed(fp32: Path, variant: Path, session: SessionConfig, batch_sizes: tuple[int, ...] = (1, 64)) -> dict[str, Any]:
    from cnnkit.bench.benchmark import run_benchmark
    from cnnkit.bench.config import BenchConfig

    r = run_benchmark(BenchConfig(models=(fp32, variant), batch_sizes=batch_sizes, session=session, min_time_s=0.4,
                                  min_iterations=10, warmup=5))
    p50 = {(c.model, c.batch_size): c.stats.p50_ms for c in r.cases}
    return {
        "provider": r.cases[0].provider["active"],
        "fp32_p50_ms": {b: p50[(str(fp32), b)] for b in batch_sizes},
        "variant_p50_ms": {b: p50[(str(variant), b)] for b in batch_sizes},
        "ratio": {b: p50[(str(variant), b)] / p50[(str(fp32), b)] for b in batch_sizes},
    }

