"""The done-when matrix of issue 10: keras.applications models and an NCHW fixed-batch ONNX from another
exporter through every cnnkit command, with exit codes and times, and direct ONNX Runtime cross-checks.

Each named application is built with ``weights=None`` and 10 classes at a small input size, its BatchNorm
statistics calibrated on real images (the MNIST test digits shipped in cnnkit, as RGB PNGs in class
folders), saved, and taken through the CLI exactly as a user would:

    export -> parity (--layers) -> bench -> quantize (static INT8 on the image folder, fp16) -> eval
    -> predict -> featuremaps -> summary (.keras and .onnx) -> report

A small PyTorch CNN exported by ``torch.onnx.export`` (NCHW, batch fixed at 1; needs ``pip install torch``) and
``light_squeezenet.onnx`` (NCHW, batch 1, from the onnx package's test data) take the ONNX-side commands.
Every command's exit code, wall time and last line go into ``matrix.json``; ``--markdown`` prints the table
for docs/measurements.md. Eval's top-1 is re-computed with a direct ONNX Runtime session (Pillow + numpy, not cnnkit's
loaders) and, for the PyTorch model, with PyTorch itself; parity's pass is re-checked as "outputs vary across
the images". ``--train-epochs N`` trains each application N epochs on the shipped MNIST training split first:
random-weight deep networks are chaotic (their top-1 moves under half a grey level), trained ones are not.

Usage: python scripts/keras_apps_matrix.py [--out DIR] [--models A,B] [--all-families] [--train-epochs N] [--markdown]
Times are for the machine it runs on; the JSON records the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# name -> (constructor kwargs, input size, preprocessing preset the architecture expects)
NAMED: dict[str, tuple[dict[str, Any], int, str]] = {
    "MobileNetV2": ({"alpha": 0.35}, 96, "tf"),
    "EfficientNetB0": ({}, 64, "raw"),  # Rescaling + Normalization inside the model
    "ResNet50": ({}, 64, "caffe"),
    "DenseNet121": ({}, 64, "torch"),
    "NASNetMobile": ({}, 64, "tf"),
    "ConvNeXtTiny": ({}, 64, "raw"),  # include_preprocessing: Normalization inside
    "MobileNetV3Small": ({}, 64, "raw"),  # include_preprocessing: Rescaling inside
}
# One more member of each other family (export and parity only, with --all-families).
FAMILIES: dict[str, tuple[dict[str, Any], int, str]] = {
    "VGG16": ({}, 32, "caffe"),
    "Xception": ({}, 71, "tf"),
    "InceptionV3": ({}, 75, "tf"),
    "InceptionResNetV2": ({}, 75, "tf"),
    "ResNet50V2": ({}, 32, "tf"),
    "MobileNet": ({"alpha": 0.25}, 32, "tf"),
    "MobileNetV3Large": ({"minimalistic": True}, 32, "raw"),
    "EfficientNetV2B0": ({}, 32, "raw"),
}
CLASSES = 10
IMAGES_PER_CLASS = 8
SQUEEZENET = "light_squeezenet.onnx"


def cnnkit(args: list[str], cwd: Path, timeout: int) -> dict[str, Any]:
    """Run ``python -m cnnkit ARGS`` in ``cwd``; exit code, wall time and the last line of output."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "cnnkit", *args], cwd=cwd, capture_output=True, text=True,
                           timeout=timeout, env=os.environ | {"COLUMNS": "120"})
        code, out = p.returncode, (p.stdout + p.stderr).strip()
    except subprocess.TimeoutExpired:
        code, out = 124, f"timed out after {timeout} s"
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith(("WARNING", "I0000", "E0000", "W0000"))]
    return {"args": args, "exit": code, "seconds": round(time.perf_counter() - t0, 1),
            "last_line": lines[-1][:300] if lines else ""}


def write_image_folder(root: Path) -> list[Path]:
    """Real MNIST test digits (shipped in cnnkit) as 28x28 RGB PNGs in class folders 0..9."""
    from PIL import Image

    from cnnkit.data.datasets import load_dataset

    ds = load_dataset("mnist")
    files = []
    for c in range(CLASSES):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(ds.y_test == c)[:IMAGES_PER_CLASS]
        for i in idx:
            f = root / str(c) / f"{i:05d}.png"
            Image.fromarray(ds.x_test[i][..., 0]).convert("RGB").save(f)
            files.append(f)
    return files


def preset_pixels(files: list[Path], size: int, preset: str) -> np.ndarray:
    """The images as the model takes them, computed here with Pillow and numpy (not cnnkit's record)."""
    from PIL import Image

    return _preset(np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
                             for f in files]).astype(np.float32), preset)


def preset_array(grey: np.ndarray, size: int, preset: str) -> np.ndarray:
    """uint8 grey images (N, H, W) -> RGB at ``size``, as the model takes them (Pillow and numpy)."""
    from PIL import Image

    return _preset(np.stack([np.asarray(Image.fromarray(g).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
                             for g in grey]).astype(np.float32), preset)


def _preset(x: np.ndarray, preset: str) -> np.ndarray:
    if preset == "tf":
        return x / 127.5 - 1
    if preset == "torch":
        return (x / 255 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    if preset == "caffe":
        return x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    return x


def build(name: str, kwargs: dict[str, Any], size: int, preset: str, files: list[Path], path: Path,
          train_epochs: int = 0) -> dict[str, Any]:
    """The application with random weights and its BatchNorm statistics calibrated on the folder's images; with
    ``train_epochs``, then trained that many epochs on the shipped MNIST training split (8,000 digits, none of
    them in the folder)."""
    import keras

    from cnnkit.keras.batchnorm import calibrate_batchnorm

    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=CLASSES, **kwargs)
    cal = calibrate_batchnorm(model, preset_pixels(files, size, preset), batch_size=16)
    trained: dict[str, Any] = {}
    if train_epochs:
        from cnnkit.data.datasets import load_dataset

        ds = load_dataset("mnist")
        x = preset_array(ds.x_train[..., 0], size, preset)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        hist = model.fit(x, ds.y_train, batch_size=64, epochs=train_epochs, verbose=0)
        # After a few hundred steps BatchNorm's moving averages (momentum 0.99) still lag the trained weights:
        # set them from the training images, as calibrate_batchnorm does for random weights.
        calibrate_batchnorm(model, x[:1024], batch_size=32)
        trained = {"epochs": train_epochs, "images": int(len(x)), "train_accuracy": float(hist.history["accuracy"][-1])}
    model.save(path)
    return {"params": int(model.count_params()), "calibration": cal.to_dict(), "trained": trained,
            "seconds": round(time.perf_counter() - t0, 1)}


def direct_top1(onnx_path: Path, files: list[Path], size: int, preset: str, layout: str = "NHWC") -> float:
    """Top-1 on the folder with a plain ONNX Runtime session: the cross-check of cnnkit eval."""
    import onnxruntime as ort

    x = preset_pixels(files, size, preset)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    fixed = s.get_inputs()[0].shape[0] == 1
    out = np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]) if fixed else s.run(None, {name: x})[0]
    labels = np.array([int(f.parent.name) for f in files])
    return float(np.mean(out.reshape(len(out), -1).argmax(1) == labels))


def keras_row(name: str, spec: tuple[dict[str, Any], int, str], folder: Path, files: list[Path], out: Path,
              full: bool, timeout: int, train_epochs: int = 0) -> dict[str, Any]:
    kwargs, size, preset = spec
    work = out / (f"{name}-trained" if train_epochs else name)
    work.mkdir(parents=True, exist_ok=True)
    label = f"{name} (trained {train_epochs} epoch{'s' if train_epochs > 1 else ''})" if train_epochs else name
    row: dict[str, Any] = {"model": label, "input": f"{size}x{size}x3", "preprocess": preset, "steps": {}}
    try:
        row["build"] = build(name, kwargs, size, preset, files, work / "model.keras", train_epochs)
    except Exception as exc:  # noqa: BLE001 (a row of the matrix, not a crash of the script)
        row["build"] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        return row
    steps = row["steps"]
    steps["export"] = cnnkit(["export", "model.keras", "-o", "model.onnx", "--preprocess", preset, "--force"], work, timeout)
    if steps["export"]["exit"] != 0:
        return row
    steps["parity"] = cnnkit(["parity", "model.keras", "model.onnx", "--data-dir", str(folder), "--samples", "40",
                              "--batch-sizes", "1,7", "--layers", "--json", "parity.json", "--force"], work, timeout)
    if not full:
        return row
    steps["summary_keras"] = cnnkit(["summary", "model.keras", "--json", "-"], work, timeout)
    onnx_steps(steps, work, folder, [files[0], files[-1]], [], timeout)
    row["checks"] = cross_checks(work, files, size, preset)
    return row


def onnx_steps(steps: dict[str, Any], work: Path, folder: Path, predict: list[Path], pre: list[str], timeout: int,
               parity_vs_fp16: bool = False) -> None:
    """The commands every row runs on ``work/model.onnx``: bench, quantize (static INT8 on the folder, FP16),
    optionally parity of FP32 against the FP16 variant, eval of every variant, predict, featuremaps, summary,
    report. ``pre``: the preprocessing options for a model without a record of its own."""
    steps["bench"] = cnnkit(["bench", "model.onnx", "--batch-sizes", "1,8", "--warmup", "3", "--min-time", "0.5",
                             "--min-iterations", "10", "--json", "bench.json", "--force"], work, timeout)
    steps["quantize_static"] = cnnkit(["quantize", "model.onnx", "-o", "model.int8.onnx", "--mode", "static",
                                       "--data-dir", str(folder), "--calibration-samples", "40", *pre, "--json",
                                       "quantize_static.json", "--force"], work, timeout)
    steps["quantize_fp16"] = cnnkit(["quantize", "model.onnx", "-o", "model.fp16.onnx", "--mode", "fp16", "--json",
                                     "quantize_fp16.json", "--force"], work, timeout)
    if parity_vs_fp16 and (work / "model.fp16.onnx").exists():
        steps["parity"] = cnnkit(["parity", "model.onnx", "model.fp16.onnx", "--data-dir", str(folder), *pre,
                                  "--samples", "40", "--batch-sizes", "1", "--json", "parity.json", "--force"], work, timeout)
    variants = [v for v in ("model.onnx", "model.int8.onnx", "model.fp16.onnx") if (work / v).exists()]
    steps["eval"] = cnnkit(["eval", *variants, "--data-dir", str(folder), *pre, "--json", "eval.json", "--force"],
                           work, timeout)
    steps["predict"] = cnnkit(["predict", "model.onnx", *map(str, predict), *pre, "-k", "3"], work, timeout)
    steps["featuremaps"] = cnnkit(["featuremaps", "model.onnx", "-o", "featuremaps", "--image", str(predict[0]), *pre,
                                   "--force"], work, timeout)
    steps["summary_onnx"] = cnnkit(["summary", "model.onnx", "--json", "-"], work, timeout)
    results = [r for r in ("parity.json", "bench.json", "quantize_static.json", "eval.json") if (work / r).exists()]
    steps["report"] = cnnkit(["report", *results, "-o", "report", "--force"], work, timeout)


def cross_checks(work: Path, files: list[Path], size: int, preset: str, layout: str = "NHWC") -> dict[str, Any]:
    checks: dict[str, Any] = {}
    if (work / "eval.json").exists() and (work / "model.onnx").exists():
        direct = direct_top1(work / "model.onnx", files, size, preset, layout)
        data = json.loads((work / "eval.json").read_text())
        cnnkit_top1 = _find_top1(data)
        checks["eval_top1_cnnkit"] = cnnkit_top1
        checks["eval_top1_direct_ort"] = direct
        checks["eval_agrees"] = cnnkit_top1 is not None and abs(cnnkit_top1 - direct) < 1e-9
        # The variants too: each one's top-1 in cnnkit eval against a plain ONNX Runtime session.
        for m in data.get("models", [])[1:]:
            variant = work / Path(m["model"]).name
            if variant.exists() and m.get("accuracy") is not None:
                tag = variant.stem.split(".")[-1]  # int8, fp16
                checks[f"eval_top1_{tag}_cnnkit"] = float(m["accuracy"])
                checks[f"eval_top1_{tag}_direct_ort"] = direct_top1(variant, files, size, preset, layout)
                checks[f"eval_{tag}_agrees"] = abs(checks[f"eval_top1_{tag}_cnnkit"]
                                                   - checks[f"eval_top1_{tag}_direct_ort"]) < 1e-9
    if (work / "parity.json").exists():
        p = json.loads((work / "parity.json").read_text())
        checks["parity_passed"] = p.get("passed")
        checks["parity_output_spread"] = p.get("inputs", {}).get("output_spread")
        checks["parity_atol"] = p.get("tolerance", {}).get("atol")
        checks["parity_max_abs"] = max((o.get("max_abs") or 0.0) for o in p.get("outputs", [])) if p.get("outputs") else None
    return checks


def _find_top1(data: Any) -> float | None:
    """The first model's top-1 in an eval result (as a fraction)."""
    models = data.get("models") or data.get("results") or []
    if models:
        m = models[0]
        for key in ("top1", "top1_accuracy", "accuracy"):
            if key in m and m[key] is not None:
                v = float(m[key])
                return v / 100 if v > 1 else v
    return None


def squeezenet_row(folder: Path, files: list[Path], out: Path, timeout: int) -> dict[str, Any]:
    import onnx

    src = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / SQUEEZENET
    work = out / "squeezenet-nchw"
    work.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"model": "light_squeezenet (NCHW, batch 1)", "input": "3x224x224", "preprocess": "torch",
                           "steps": {}}
    if not src.exists():
        row["build"] = {"error": f"{src} not found in this onnx package"}
        return row
    shutil.copy(src, work / "model.onnx")
    steps = row["steps"]
    onnx_steps(steps, work, folder, files[:1], ["--preprocess", "torch"], timeout, parity_vs_fp16=True)
    row["checks"] = cross_checks(work, files, 224, "torch", "NCHW")
    return row


def torch_nchw_model() -> Any:
    """A small NCHW classifier (conv-BN-ReLU6, depthwise and pointwise convs, a residual add, global pooling,
    ``x.view(1, -1)``, Linear) exported by ``torch.onnx.export`` with a fixed batch of 1, as PyTorch users ship
    them. Random weights, BatchNorm statistics calibrated on the folder's images; the TorchScript route."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                             nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
            self.b1, self.b2, self.b3 = block(16, 32, 2), block(32, 32, 1), block(32, 64, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.b1(self.stem(x))
            x = x + self.b2(x)
            return self.fc(self.pool(self.b3(x)).view(1, -1))

    return Net()


def build_torch(path: Path, files: list[Path], size: int = 64) -> dict[str, Any]:
    t0 = time.perf_counter()
    import torch

    net = torch_nchw_model()
    x = torch.from_numpy(preset_pixels(files, size, "torch").transpose(0, 3, 1, 2).copy())
    net.train()  # BatchNorm statistics from the images: a cumulative average over one pass
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for i in range(len(x)):  # batch 1: the model's view(1, -1) takes no other
            net(x[i:i + 1])
    net.eval()
    torch.onnx.export(net, (x[:1],), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamo=False)
    with torch.no_grad():
        logits = torch.cat([net(x[i:i + 1]) for i in range(len(x))]).numpy()
    return {"params": int(sum(p.numel() for p in net.parameters())), "torch": torch.__version__,
            "output_spread": float((logits.max(0) - logits.min(0)).max()), "seconds": round(time.perf_counter() - t0, 1),
            "torch_logits": logits}


def torch_row(folder: Path, files: list[Path], out: Path, timeout: int) -> dict[str, Any]:
    """The done-when's NCHW fixed-batch-1 model from another exporter, through every ONNX-side command; its
    parity rows compare it with its own dynamic-batch rewrite and with the INT8 and FP16 variants."""
    work = out / "torch-nchw"
    work.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"model": "PyTorch CNN (NCHW, batch 1)", "input": "3x64x64", "preprocess": "torch",
                           "steps": {}}
    try:
        built = build_torch(work / "model.onnx", files)
    except ImportError:
        row["build"] = {"error": "PyTorch is not installed (pip install torch)"}
        return row
    logits = built.pop("torch_logits")
    row["build"] = built
    pre = ["--preprocess", "torch"]
    steps = row["steps"]
    steps["export"] = cnnkit(["export", "--make-batch-dynamic", "model.onnx", "-o", "model-dynamic.onnx", "--force"],
                             work, timeout)
    steps["parity"] = cnnkit(["parity", "model.onnx", "model-dynamic.onnx", "--data-dir", str(folder), *pre,
                              "--samples", "40", "--json", "parity.json", "--force"], work, timeout)
    onnx_steps(steps, work, folder, files[:1], pre, timeout)
    row["checks"] = cross_checks(work, files, 64, "torch", "NCHW")
    labels = np.array([int(f.parent.name) for f in files])
    row["checks"]["eval_top1_torch"] = float(np.mean(logits.argmax(1) == labels))  # PyTorch itself, not ONNX
    return row


COLUMNS = ("export", "parity", "bench", "quantize_static", "quantize_fp16", "eval", "predict", "featuremaps",
           "summary_keras", "summary_onnx", "report")


def markdown(result: dict[str, Any]) -> str:
    head = "| model | input | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for row in result["rows"]:
        cells = []
        for c in COLUMNS:
            step = row.get("steps", {}).get(c)
            cells.append("" if step is None else f"{step['exit']} ({step['seconds']:.0f} s)")
        if "error" in row.get("build", {}):
            cells[0] = f"build failed: {row['build']['error'][:60]}"
        lines.append(f"| {row['model']} | {row['input']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/keras-apps-matrix"))
    ap.add_argument("--models", default=",".join(NAMED), help="comma-separated named applications to run in full")
    ap.add_argument("--all-families", action="store_true", help="also export + parity one model of each other family")
    ap.add_argument("--no-squeezenet", action="store_true")
    ap.add_argument("--no-torch", action="store_true", help="leave out the PyTorch NCHW batch-1 row")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per command")
    ap.add_argument("--train-epochs", type=int, default=0,
                    help="train each named application this many epochs on the shipped MNIST training split (default 0: "
                         "random weights, BatchNorm calibrated)")
    ap.add_argument("--markdown", action="store_true", help="print the table for docs/measurements.md")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / "images"
    if folder.exists():
        shutil.rmtree(folder)
    files = write_image_folder(folder)
    folder = folder.resolve()
    files = [f.resolve() for f in files]
    rows: list[dict[str, Any]] = []
    from cnnkit.envinfo import environment

    result = {"schema": "cnnkit.keras-apps-matrix/1", "images": {"folder": str(folder), "files": len(files),
              "source": "MNIST test digits shipped in cnnkit, 28x28 RGB PNG, 8 per class"},
              "machine": platform.processor() or platform.machine(), "environment": environment(), "rows": rows}

    def save() -> None:  # after every row, so an interrupted run keeps what it measured
        (args.out / "matrix.json").write_text(json.dumps(result, indent=2, default=str))

    wanted = [m for m in args.models.split(",") if m]
    for name in wanted:
        spec = NAMED.get(name) or FAMILIES.get(name)
        if spec is None:
            print(f"unknown application {name}", file=sys.stderr)
            return 1
        print(f"== {name}", flush=True)
        rows.append(keras_row(name, spec, folder, files, args.out, full=True, timeout=args.timeout,
                              train_epochs=args.train_epochs))
        print(json.dumps({k: v["exit"] for k, v in rows[-1]["steps"].items()}), flush=True)
        save()
    if not args.no_torch:
        print("== PyTorch NCHW", flush=True)
        rows.append(torch_row(folder, files, args.out, args.timeout))
        print(json.dumps({k: v["exit"] for k, v in rows[-1]["steps"].items()}), flush=True)
        save()
    if not args.no_squeezenet:
        print("== light_squeezenet", flush=True)
        rows.append(squeezenet_row(folder, files, args.out, args.timeout))
        print(json.dumps({k: v["exit"] for k, v in rows[-1]["steps"].items()}), flush=True)
        save()
    if args.all_families:
        for name, spec in FAMILIES.items():
            print(f"== {name} (export, parity)", flush=True)
            rows.append(keras_row(name, spec, folder, files, args.out, full=False, timeout=args.timeout))
            print(json.dumps({k: v["exit"] for k, v in rows[-1]["steps"].items()}), flush=True)
            save()
    save()
    print(f"wrote {args.out / 'matrix.json'}")
    if args.markdown:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
