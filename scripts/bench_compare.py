#!/usr/bin/env python3
"""How long and how much memory does ``cnnkit compare`` take on big results? Goal: a result of 100,000 samples
compares in under 2 s and 200 MB (the bootstrap resamples block medians, never the samples).

The whole command is timed (Python start, imports, reading and validating the JSON, the bootstrap); on a shared,
loaded machine the wall time waits for a core, so the child's CPU time is reported too.
Writes two schema-complete bench results (one case each, lognormal latencies, the new one 1 % slower), then runs
``cnnkit compare`` on them in a child process and reports its wall time and peak resident memory (ru_maxrss).

    python scripts/bench_compare.py [--samples 100000] [--cases 1] [--repeat 3]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnkit.envinfo import cpu_info


def write(path: Path, samples: int, cases: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(cases):
        ms = rng.lognormal(shift, 0.3, samples)
        p = np.percentile(ms, [50, 90, 95, 99])
        out.append({"model": "/m/model.onnx", "model_sha256": "0", "precision": "fp32", "batch_size": 2 ** i,
                    "provider": {"requested": "cpu", "providers": ["CPUExecutionProvider"], "active": "CPUExecutionProvider"},
                    "stats": {"count": samples, "min_ms": ms.min(), "mean_ms": ms.mean(), "p50_ms": p[0], "p90_ms": p[1],
                              "p95_ms": p[2], "p99_ms": p[3], "max_ms": ms.max(), "std_ms": ms.std(), "images_per_s": 1e3 / p[0]},
                    "samples_ns": (ms * 1e6).astype(int).tolist(), "warmup": 10, "session_create_ms": 1.0,
                    "first_inference_ms": 1.0, "peak_rss_mb": 1.0, "io_binding": False, "include_copies": False})
    env = {"cpu": {"model": cpu_info()["model"]}, "packages": {}}
    path.write_text(json.dumps({"schema": "cnnkit.bench/1", "created": "-", "config": {}, "environment": env, "cases": out}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--cases", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.json", Path(tmp) / "b.json"
        write(a, args.samples, args.cases, 0.0, 0)
        write(b, args.samples, args.cases, 0.01, 1)
        times, cpu = [], []
        for _ in range(args.repeat):
            t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run([sys.executable, "-m", "cnnkit", "compare", str(a), str(b)], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            if done.returncode not in (0, 1):
                sys.exit(f"compare failed: {done.stderr.strip()}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(done.stdout.strip().splitlines()[-1])
    print(f"{args.cases} case(s) x {args.samples:,} samples per file: wall {min(times):.2f} s (best of {args.repeat}; "
          f"all {', '.join(f'{t:.2f}' for t in times)}), CPU time {min(cpu):.2f} s (what a loaded machine does not inflate), peak RSS {peak_mb:.0f} MB (the whole process: Python, numpy, "
          f"pydantic, rich); goal < 2 s and < 200 MB; CPU {cpu_info()['model']}")


if __name__ == "__main__":
    main()
