#!/usr/bin/env python3
"""Which runtime to deploy the model on, here: a thin call of ``cnnkit bench --recommend``.

Makes the LiteRT model beside the .onnx if it is missing (``cnnkit export --format tflite``), then runs one
interleaved benchmark of ONNX Runtime (session options tuned per batch size), OpenVINO fp32 and bf16 (bf16
only where the CPU computes it; reported as bf16, never compared as equal to fp32) and LiteRT with XNNPACK,
evaluates each runtime x precision on the model's dataset, and names per batch size the fastest one within
the accuracy budget whose lead the rounds confirm, with the command that reproduces it.

    python scripts/bench_peers.py MODEL.keras MODEL.onnx [--batch-sizes 1,64,256] [--json out.json] [cnnkit bench options]

Peers are optional: pip install "cnnkit[bench]" (ai-edge-litert, openvino); a missing one is a one-line error.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0].startswith("-") or argv[1].startswith("-"):
        sys.exit(__doc__)
    keras_path, onnx_path, rest = Path(argv[0]), Path(argv[1]), argv[2:]
    from cnnkit.cli.app import main as cnnkit

    tflite = onnx_path.with_suffix(".tflite")
    if not tflite.exists():
        run(cnnkit, ["export", str(keras_path), "--format", "tflite", "-o", str(tflite)])
    if "--batch-sizes" not in rest:
        rest = ["--batch-sizes", "1,64,256", *rest]
    run(cnnkit, ["bench", str(onnx_path), "--runtime", "onnxruntime,openvino,litert", "--tune", "--recommend", *rest])


def run(cnnkit, args: list[str]) -> None:  # noqa: ANN001 (cnnkit.cli.app.main)
    sys.argv = ["cnnkit", *args]
    try:
        cnnkit()
    except SystemExit as exc:  # the CLI exits; a failure ends the script with its code
        if exc.code not in (0, None):
            raise


if __name__ == "__main__":
    main(sys.argv[1:])
