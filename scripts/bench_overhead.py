#!/usr/bin/env python3
"""Does cnnkit's benchmark harness add anything? Its median at batch 1 on the CPU against a bare
``session.run`` loop on the same session, in alternating rounds. Goal: within 5 %.

    python scripts/bench_overhead.py MODEL.onnx [--rounds 20] [--round-time 0.25]
"""

import argparse
import json
from pathlib import Path

from cnnkit.bench.timing import measure_overhead
from cnnkit.envinfo import environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--round-time", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    r = measure_overhead(args.model, args.batch_size, args.rounds, args.round_time)
    verdict = "within" if r.overhead <= 0.05 else "OVER"
    print(f"batch {r.batch_size}: harness p50 {r.harness_p50_ms:.4f} ms, bare session.run p50 {r.bare_p50_ms:.4f} ms, "
          f"overhead {100 * r.overhead:+.2f} % ({verdict} the 5 % goal; {r.rounds} interleaved rounds)")
    if args.json:
        args.json.write_text(json.dumps({"result": r.__dict__ | {"overhead": r.overhead}, "environment": environment()}, indent=2))


if __name__ == "__main__":
    main()
