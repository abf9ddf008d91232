"""Evidence, not a test: distributed eval (``--engine ray``, a local cluster) against the local eval on one folder.

Writes 10,000 real MNIST digits (the shipped set: its 8,000 train and 2,000 test images) as PNGs in class
folders, builds a small conv classifier (onnx.helper, seeded), and times, in alternating rounds on the same
folder: the local eval, and the Ray eval (wall with the cluster start, the engine's own wall from the first
block to the last result, and its steady rate after the first batch). The figures are compared as medians and
printed with the CPU; the script checks the two evals agree figure for figure.

    PYTHONPATH=toolkit python scripts/bench_ray_eval.py [--images 10000] [--rounds 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_folder(root: Path, n: int) -> int:
    from PIL import Image

    from cnnkit.data.datasets import load_shipped_mnist

    ds = load_shipped_mnist()
    x = np.concatenate([ds.x_train, ds.x_test])[..., 0]
    y = np.concatenate([ds.y_train, ds.y_test])
    n = min(n, len(x))
    for i in range(n):
        folder = root / str(int(y[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i], "L").save(folder / f"{i:05d}.png")
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    from cnnkit.data.preprocess import PreprocessChoice
    from cnnkit.distributed.ray_eval import evaluate_on_ray
    from cnnkit.envinfo import cpu_info
    from cnnkit.evaluate.accuracy import EvalConfig, evaluate_models
    from tests.imaging import tiny_classifier

    with tempfile.TemporaryDirectory(prefix="cnnkit-ray-bench-") as tmp:
        root = Path(tmp)
        n = write_folder(root / "digits", args.images)
        model = tiny_classifier(root / "m.onnx", size=(28, 28), channels=1)
        config = EvalConfig((model,), data_dir=root / "digits", batch_size=args.batch_size,
                            preprocess=PreprocessChoice(preset="unit"))
        local_s, ray_s, engine_s, steady, first = [], [], [], [], []
        for r in range(args.rounds):
            t = time.perf_counter()
            local = evaluate_models(config).to_dict()
            local_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            dist = evaluate_on_ray(config, workers=args.workers).to_dict()
            ray_s.append(time.perf_counter() - t)
            e = dist["engine"]
            engine_s.append(e["wall_s"])
            first.append(e["first_batch_s"])
            steady.append(e["steady_images_per_s"])
            same = all(dist["models"][0][k] == local["models"][0][k] for k in ("accuracy", "confusion", "top5_accuracy"))
            print(f"round {r + 1}: local {local_s[-1]:.1f} s; ray {ray_s[-1]:.1f} s with the cluster start, engine "
                  f"{engine_s[-1]:.1f} s (first batch {first[-1]:.1f} s), steady {steady[-1] or 0:,.0f} images/s, "
                  f"{e['workers']} workers; same figures: {same}", flush=True)
        med = statistics.median
        summary = {
            "images": n, "model": "tiny conv classifier 28x28x1 (tests/imaging.py)", "cpu": cpu_info().get("model"),
            "cores": cpu_info().get("logical_cores"), "workers": dist["engine"]["workers"],
            "local_s": med(local_s), "local_images_per_s": n / med(local_s),
            "ray_with_cluster_start_s": med(ray_s), "ray_engine_s": med(engine_s),
            "ray_first_batch_s": med(first), "ray_steady_images_per_s": med([s for s in steady if s] or [0]),
            "overhead_engine_vs_local": med(engine_s) / med(local_s) - 1,
            "overhead_steady_vs_local": (n / med(local_s)) / med([s for s in steady if s] or [1]) - 1,
            "rounds": args.rounds,
        }
        print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
