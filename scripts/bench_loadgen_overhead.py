"""What LoadGen's SUT path adds to single-stream latency: the p90 of a bare ``session.run`` loop against the p90
LoadGen reports for the same model, samples and session, interleaved in rounds (the machine is shared).

    python scripts/bench_loadgen_overhead.py MODEL.onnx [--rounds 3] [--seconds 5]

The bare loop runs one sample at a time through ``session.run`` on the runner's own session, cycling over the
same in-memory samples LoadGen's QSL holds; LoadGen's p90 is read from its summary. The difference is what the
SUT path costs per query: LoadGen's issue thread calling into Python, the sample lookup, the runner's ``infer``
(dtype check, output dict), the top-1 answer and ``QuerySamplesComplete``. Prints one line per round and the
medians. Needs ``pip install "cnnkit[loadgen]"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_p90_ms(session, name: str, samples: np.ndarray, seconds: float) -> tuple[float, int]:
    """p90 of ``session.run`` over single samples, timed one by one for ``seconds``."""
    times = []
    i = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 256:
        x = samples[i % len(samples)][None]
        t0 = time.perf_counter_ns()
        session.run(None, {name: x})
        times.append(time.perf_counter_ns() - t0)
        i += 1
    return float(np.percentile(times, 90)) / 1e6, len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    from cnnkit.bench.loadgen import QueryServer, TestPoint, run_test
    from cnnkit.bench.scenarios import ScenarioConfig, prepare_workload
    from cnnkit.envinfo import cpu_info

    with tempfile.TemporaryDirectory() as tmp:
        config = ScenarioConfig(args.model, ("single-stream",), Path(tmp) / "out", samples=1024)
        workload = prepare_workload(config)
        from cnnkit.runtimes.registry import create_runner

        runner = create_runner(config.runtime, config.model, config.session)
        runner_session, name = runner.session, runner.input_name
        workload.engines = [lambda x: next(iter(runner.infer({name: x}).values()))]
        samples = np.ascontiguousarray(workload.samples)
        bare_p90_ms(runner_session, name, samples, 1.0)  # warm-up
        cpu = cpu_info()
        print(f"{args.model.name}: {cpu['model']}, {cpu['usable_cores']} cores; {len(samples)} samples; "
              f"{args.rounds} interleaved rounds of >= {args.seconds:g} s each")
        bare, lg = [], []
        for r in range(args.rounds):
            b, n = bare_p90_ms(runner_session, name, samples, args.seconds)
            point = TestPoint("single-stream", int(args.seconds * 1000), 256, expected_latency_ms=b / 4)  # low: LoadGen stops at the minimums
            server = QueryServer(workload.engines, samples, 1, inline=True)
            summary = run_test(server, point, Path(tmp) / f"round{r}")
            p90 = summary.percentile_ns(90) / 1e6
            queries = int(summary.parameters.get("min_query_count", 0))
            bare.append(b)
            lg.append(p90)
            print(f"round {r + 1}: bare session.run p90 {b:.4f} ms ({n} runs); LoadGen single-stream p90 {p90:.4f} ms "
                  f"({'VALID' if summary.valid else 'INVALID: ' + '; '.join(summary.reasons())}, {server.stats.samples} queries, min {queries}); "
                  f"+{1000 * (p90 - b):.1f} us ({100 * (p90 / b - 1):+.1f} %)")
        b, p = float(np.median(bare)), float(np.median(lg))
        print(f"median: bare {b:.4f} ms, LoadGen {p:.4f} ms: the SUT path adds {1000 * (p - b):.1f} us per query "
              f"({100 * (p / b - 1):+.1f} %)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
