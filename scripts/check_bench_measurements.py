#!/usr/bin/env python3
"""An independent check of ``cnnkit bench --profile --memory --concurrency ...`` (ONNX Runtime rows), with
onnxruntime's own API and no cnnkit code in the loop:

- latency: a bare ``session.run`` loop per batch size, its median beside the bench's p50;
- profile: ONNX Runtime's profile file read directly; its slowest node beside the bench's top operator;
- concurrency: N plain threads over one session; images/s over wall time beside the bench's;
- memory: a fresh ``python -c`` process reading its own VmRSS around session creation and ru_maxrss after
  runs at the largest batch size, beside the bench's figures (arena on).

    python scripts/check_bench_measurements.py BENCH.json [--seconds 1.0]

Run it right after the bench: on a shared machine, speed drifts over seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

MEMORY_CHILD = r"""
import json, resource, sys, numpy as np
def rss():
    return next(float(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) / 1024
import onnxruntime as ort
before = rss()
s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
after = rss()
inp = s.get_inputs()[0]
x = np.random.default_rng(0).integers(0, 256, (int(sys.argv[2]), *inp.shape[1:])).astype(np.float32)
for _ in range(5):
    s.run(None, {inp.name: x})
print(json.dumps({"before": before, "after": after, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def batch(session: ort.InferenceSession, b: int) -> dict[str, np.ndarray]:
    inp = session.get_inputs()[0]
    x = np.random.default_rng(b).integers(0, 256, (b, *inp.shape[1:])).astype(np.float32)
    return {inp.name: x}


def bare_median_ms(model: str, b: int, seconds: float) -> float:
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds = batch(s, b)
    for _ in range(10):
        s.run(None, feeds)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        t0 = time.perf_counter_ns()
        s.run(None, feeds)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def profile_top(model: str, b: int, runs: int = 10) -> tuple[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = f"{tmp}/p"
        s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        feeds = batch(s, b)
        for _ in range(3 + runs):
            s.run(None, feeds)
        events = json.loads(Path(s.end_profiling()).read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-runs:]
    per_node: dict[str, list[float]] = defaultdict(lambda: [0.0] * runs)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            for r, (a, z) in enumerate(windows):
                if a <= e["ts"] <= z:
                    per_node[e["name"][: -len("_kernel_time")]][r] += e["dur"]
    node = max(per_node, key=lambda n: statistics.median(per_node[n]))
    return node, statistics.median(per_node[node])


def threads_images_per_s(model: str, b: int, n: int, threads: int, seconds: float) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feeds = batch(s, b)
    s.run(None, feeds)
    done = [0] * n
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            s.run(None, feeds)
            done[i] += 1

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) * b / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    data = json.loads(args.bench.read_text())
    cases = [c for c in data["cases"] if c.get("runtime", "onnxruntime") == "onnxruntime"]
    print(f"CPU: {data['environment']['cpu']['model']}, {data['environment']['cpu']['usable_cores']} cores")
    print("latency, p50 ms: cnnkit bench vs a bare session.run loop (now)")
    for c in cases:
        bare = bare_median_ms(c["model"], c["batch_size"], args.seconds)
        print(f"  {Path(c['model']).name} batch {c['batch_size']}: {c['stats']['p50_ms']:.4g} vs {bare:.4g} "
              f"({c['stats']['p50_ms'] / bare - 1:+.0%})")
    if data.get("profiles"):
        print("profile, top node: cnnkit bench vs ONNX Runtime's profile file read directly")
    for p in data.get("profiles", []):
        node, us = profile_top(p["model"], p["batch_size"])
        top = p["top_operators"][0]
        verdict = "same" if node == top["node"] else "DIFFERENT"
        print(f"  {Path(p['model']).name} batch {p['batch_size']}: {top['node']} {top['us']:,.0f} µs vs {node} {us:,.0f} µs: {verdict}")
    if data.get("concurrency"):
        print("throughput, images/s: cnnkit bench vs plain threads over one session (now)")
    for p in data.get("concurrency", []):
        ips = threads_images_per_s(p["model"], p["batch_size"], p["streams"], p["intra_op_threads"], args.seconds)
        print(f"  {Path(p['model']).name} batch {p['batch_size']}, {p['streams']} in flight: "
              f"{p['images_per_s']:,.0f} vs {ips:,.0f} ({p['images_per_s'] / ips - 1:+.0%})")
    for m in data.get("memory", []):
        if not m["cpu_mem_arena"]:
            continue
        b = max(int(k) for k in m["peak_rss_mb"])
        out = json.loads(subprocess.run([sys.executable, "-c", MEMORY_CHILD, m["model"], str(b)], capture_output=True,
                                        text=True, check=True).stdout)
        print(f"memory, MiB ({Path(m['model']).name}, arena on): session adds {m['rss_after_session_mb'] - m['rss_before_session_mb']:.1f} "
              f"vs {out['after'] - out['before']:.1f}; peak at batch {b} {m['peak_rss_mb'][str(b)]:.0f} vs ru_maxrss {out['maxrss']:.0f}")


if __name__ == "__main__":
    main()
