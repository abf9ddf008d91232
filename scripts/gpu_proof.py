"""Helpers of scripts/gpu_proof.sh (issue 23: `cnnkit bench --provider cuda` proved on a real GPU).

cnnkit itself is only ever run through its CLI; this file imports no cnnkit module, so that it survives the
package's internal moves. What it needs besides the standard library: numpy everywhere; keras (here, on the
CPU machine) for ``mobilenet`` and ``keras-refs``; onnxruntime (there, on the GPU) for ``compare``; Pillow for
``images`` and ``keras-refs``.

Subcommands (each prints one line per thing it did):
  images DIR                       held-out shipped MNIST test digits as RGB PNGs in class folders 0..9
  mobilenet OUT.keras              keras.applications.MobileNetV2 (alpha, size, 10 classes), trained N epochs on
                                   the 8,000 shipped training digits as RGB, BatchNorm statistics re-estimated
  keras-refs MODEL.keras OUT.npz   golden inputs (uint8 pixels) and Keras' CPU outputs on them
  compare REFS.npz MODEL.onnx      ONNX Runtime on CUDA (TF32 on, TF32 off) and on the CPU against the Keras
                                   outputs, with the tolerances stated; exit 1 if a CUDA row fails its gate
  check-deps                       cnnkit's installed requirements are all met (names and versions)
  cuda-check                       a session really runs on CUDA here (exit 1 if not)
  env OUT.json                     GPU, driver, CUDA runtime and cuDNN versions, packages, host CPU
  bench-line BENCH.json            one line per case: p50, images/s, provider
  pack RESULTS_DIR OUT.tgz         the results folder in one file (raw samples dropped if over 15 MiB)
  check-out DIR                    DIR fits what the device tool brings back (files, sizes, depth, names)
  summary RESULTS_DIR              the key figures of a remote run, as text (and --json)
  docs RESULTS_DIR DOC.md          the benchmark page section from a remote run's results
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The MNIST test set shipped in the package; the offline split is default_rng(0) over its 10,000 images,
# the first 8,000 for training, the last 2,000 held out (cnnkit's datasets module does the same).
SHIPPED = ROOT / "toolkit" / "cnnkit" / "data" / "mnist-t10k"
SPLIT_SEED, SPLIT_TRAIN = 0, 8000
# Keras vs ONNX tolerances: cnnkit parity's defaults (README, "Parity"): |diff| <= ATOL + RTOL * |ref|,
# atol widened to 4x the candidate's own float32 rounding floor (all graph optimisations vs none) where larger.
ATOL, RTOL, FLOOR_FACTOR = 1e-5, 1e-4, 4.0
PARITY_BATCHES = (1, 7, 64)
# What the device tool brings back from $OUT.
OUT_MAX_FILES, OUT_MAX_FILE, OUT_MAX_TOTAL, OUT_MAX_DEPTH = 8, 16 * 2**20, 64 * 2**20, 3
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


# ---------------------------------------------------------------- data (numpy + Pillow only)

def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def shipped_split() -> dict[str, np.ndarray]:
    x = _read_idx(SHIPPED / "t10k-images-idx3-ubyte.gz")
    y = _read_idx(SHIPPED / "t10k-labels-idx1-ubyte.gz")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    train, test = order[:SPLIT_TRAIN], order[SPLIT_TRAIN:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def to_rgb(grey: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, 28, 28) -> uint8 (N, size, size, 3), Pillow bilinear (what cnnkit does to an image folder)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(g).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
                     for g in grey])


def preprocess(pixels: np.ndarray, preset: str) -> np.ndarray:
    """uint8 pixels -> the float32 the model takes. Both sides of a comparison call this on the same pixels."""
    x = pixels.astype(np.float32)
    if preset == "tf":
        return x / np.float32(127.5) - np.float32(1.0)
    if preset == "raw":
        return x
    raise SystemExit(f"unknown preprocessing preset {preset!r}")


def golden_pixels(shape: tuple[int, ...], real: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Real images, then 16 seeded random images, 2 all-0, 2 all-255 and 8 noisy real ones (as cnnkit parity)."""
    rng = np.random.default_rng(seed)
    rand = rng.integers(0, 256, (16, *shape), dtype=np.uint8)
    zeros, full = np.zeros((2, *shape), np.uint8), np.full((2, *shape), 255, np.uint8)
    base = real[np.arange(8) % len(real)].astype(np.int16)
    noisy = np.clip(base + rng.integers(-32, 33, base.shape), 0, 255).astype(np.uint8)
    x = np.concatenate([real, rand, zeros, full, noisy])
    kind = np.array(["real"] * len(real) + ["random"] * 16 + ["zeros"] * 2 + ["full"] * 2 + ["noisy"] * 8)
    y = np.concatenate([labels.astype(np.int64), np.full(28, -1)])
    return {"pixels": x, "labels": y, "kind": kind}


def cmd_images(a: argparse.Namespace) -> int:
    from PIL import Image

    ds = shipped_split()
    out = Path(a.dir)
    n = 0
    for c in range(10):
        (out / str(c)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(ds["y_test"] == c)[:a.per_class]:
            Image.fromarray(ds["x_test"][i]).convert("RGB").save(out / str(c) / f"{int(i):04d}.png")
            n += 1
    print(f"images: {n} held-out shipped MNIST test digits as 28x28 RGB PNGs in {out}/0..9")
    return 0


# ---------------------------------------------------------------- Keras side (the CPU machine)

def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def reestimate_batchnorm(model: Any, x: np.ndarray) -> int:
    """Set every BatchNormalization's moving statistics from one training-mode pass over ``x`` (weights fixed):
    after a few hundred steps the moving averages (momentum 0.99) still lag the trained weights."""
    keras = _keras()
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [b.momentum for b in bns]
    for b in bns:
        b.momentum = 0.0
    model(x, training=True)
    for b, m in zip(bns, saved, strict=True):
        b.momentum = m
    return len(bns)


def cmd_mobilenet(a: argparse.Namespace) -> int:
    keras = _keras()
    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, alpha=a.alpha, input_shape=(a.size, a.size, 3),
                                           classes=a.classes)
    info: dict[str, Any] = {"architecture": "keras.applications.MobileNetV2", "alpha": a.alpha, "size": a.size,
                            "classes": a.classes, "params": int(model.count_params()), "preprocess": "tf",
                            "epochs": a.epochs}
    if a.epochs:
        ds = shipped_split()
        x = preprocess(to_rgb(ds["x_train"], a.size), "tf")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        hist = model.fit(x, ds["y_train"], batch_size=64, epochs=a.epochs, verbose=0)
        info["bn_layers_reestimated"] = reestimate_batchnorm(model, x[:512])
        xt = preprocess(to_rgb(ds["x_test"], a.size), "tf")
        info["train_accuracy"] = round(float(hist.history["accuracy"][-1]), 4)
        info["held_out_accuracy"] = round(float(np.mean(model.predict(xt, batch_size=128, verbose=0).argmax(1)
                                                        == ds["y_test"])), 4)
        info["trained_on"] = f"{len(x)} shipped MNIST training digits as RGB {a.size}x{a.size}"
    else:
        info["weights"] = "random (timing only: BatchNorm statistics never set, outputs near-constant)"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    out.with_name("build.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"mobilenet: {out} " + json.dumps(info))
    return 0


def cmd_keras_refs(a: argparse.Namespace) -> int:
    """Golden inputs and Keras' outputs on the CPU: TensorFlow cannot be installed on the GPU machine, so its
    side of the parity check travels as numbers."""
    keras = _keras()
    model = keras.models.load_model(a.model, compile=False)
    h, w, c = (int(d) for d in model.input_shape[1:])
    ds = shipped_split()
    real, labels = ds["x_test"][:a.samples], ds["y_test"][:a.samples]
    real = real[..., None] if c == 1 and (h, w) == real.shape[1:] else to_rgb(real, h)
    g = golden_pixels((h, w, c), real, labels)
    x = preprocess(g["pixels"], a.preprocess)
    y = np.asarray(model.predict(x, batch_size=64, verbose=0), np.float32)
    np.savez_compressed(a.out, pixels=g["pixels"], labels=g["labels"], kind=g["kind"], keras=y,
                        preprocess=np.array(a.preprocess), model=np.array(Path(a.model).name),
                        keras_version=np.array(keras.__version__))
    acc = float(np.mean(y[:a.samples].argmax(1) == labels))
    spread = float(np.max(np.ptp(y, axis=0)))
    print(f"keras-refs: {a.out}: {len(x)} inputs ({a.samples} held-out digits + 28 random/edge), Keras "
          f"{keras.__version__} on the CPU: top-1 {acc:.2%} on the digits, output spread {spread:.3g}")
    return 0


# ---------------------------------------------------------------- ONNX Runtime side (the GPU machine)

def ort_outputs(model: str, x: np.ndarray, provider: str, options: dict[str, str], batches: tuple[int, ...],
                optimize: bool = True) -> tuple[dict[int, np.ndarray], list[str]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    chain: list[Any] = ["CPUExecutionProvider"] if provider == "CPUExecutionProvider" else [(provider, options),
                                                                                            "CPUExecutionProvider"]
    sess = ort.InferenceSession(model, so, providers=chain)
    name = sess.get_inputs()[0].name
    outs = {b: np.concatenate([sess.run(None, {name: x[i:i + b]})[0] for i in range(0, len(x), b)]) for b in batches}
    return outs, list(sess.get_providers())


def compare_arrays(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float,
                   labels: np.ndarray | None = None) -> dict[str, Any]:
    """cnnkit parity's measures, with numpy: max/mean |diff|, the smallest atol that passes at ``rtol``,
    top-1 agreement (a flip where the reference's top two are within the tolerance is a near-tie, not a fail)."""
    ref, got = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
    d = np.abs(got - ref)
    need = float(np.max(np.maximum(d - rtol * np.abs(ref), 0.0))) if d.size else 0.0
    t_ref, t_got = ref.argmax(1), got.argmax(1)
    flips = np.flatnonzero(t_ref != t_got)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    near = [int(i) for i in flips if top2[i, 1] - top2[i, 0] <= 2 * (atol + rtol * abs(top2[i, 1]))]
    out = {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "needed_atol": need,
           "within_tolerance": bool(need <= atol), "top1_agreement": float(np.mean(t_ref == t_got)),
           "flips": len(flips), "near_ties": len(near)}
    out["passed"] = out["within_tolerance"] and len(flips) == len(near)
    if labels is not None and (labels >= 0).any():
        m = labels >= 0
        out["accuracy_ref"] = float(np.mean(t_ref[m] == labels[m]))
        out["accuracy"] = float(np.mean(t_got[m] == labels[m]))
    return out


def cmd_compare(a: argparse.Namespace) -> int:
    import onnxruntime as ort

    refs = np.load(a.refs)
    x = preprocess(refs["pixels"], str(refs["preprocess"]))
    ref, labels = refs["keras"], refs["labels"]
    rows = []
    runs = [("CUDA, TF32 on (ONNX Runtime's default)", "CUDAExecutionProvider", {}),
            ("CUDA, TF32 off (use_tf32=0)", "CUDAExecutionProvider", {"use_tf32": "0"}),
            ("CPU", "CPUExecutionProvider", {})]
    if a.no_cuda:
        runs = runs[2:]
    for label, provider, opts in runs:
        row: dict[str, Any] = {"run": label, "provider": provider, "options": opts, "batch_sizes": list(PARITY_BATCHES)}
        try:
            t0 = time.perf_counter()
            outs, active = ort_outputs(a.model, x, provider, opts, PARITY_BATCHES)
            plain, _ = ort_outputs(a.model, x, provider, opts, (64,), optimize=False)
            row["active"] = active
            floor = float(np.max(np.abs(outs[64] - plain[64])))
            atol = max(ATOL, FLOOR_FACTOR * floor)
            per_batch = {b: compare_arrays(ref, o, atol, RTOL, labels) for b, o in outs.items()}
            worst = max(per_batch.values(), key=lambda r: r["needed_atol"])
            row |= {"rounding_floor": floor, "atol": atol, "rtol": RTOL, "strict_atol": ATOL,
                    "strict_pass": all(r["needed_atol"] <= ATOL and r["flips"] == r["near_ties"] for r in per_batch.values()),
                    "worst": worst, "per_batch": {str(b): r for b, r in per_batch.items()},
                    "passed": all(r["passed"] for r in per_batch.values()) and active[0] == provider,
                    "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as exc:  # noqa: BLE001 (a row of the report, not a crash)
            row |= {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}", "passed": False}
        rows.append(row)
        if "error" in row:
            print(f"compare {Path(a.model).name} [{label}]: ERROR {row['error']}")
        else:
            w = row["worst"]
            print(f"compare {Path(a.model).name} vs Keras (CPU) [{label}]: active {row['active'][0]}; "
                  f"max |diff| {w['max_abs']:.3g} (mean {w['mean_abs']:.3g}); needs atol {w['needed_atol']:.3g} at rtol "
                  f"{RTOL:g}; gate atol {row['atol']:.3g} (floor {row['rounding_floor']:.3g}); top-1 agreement "
                  f"{w['top1_agreement']:.4f} ({w['flips']} flips, {w['near_ties']} near-ties); "
                  + (f"accuracy {w.get('accuracy', float('nan')):.2%} (Keras {w.get('accuracy_ref', float('nan')):.2%}); "
                     if "accuracy" in w else "")
                  + ("PASS" if row["passed"] else "FAIL") + (" (strict 1e-5 gate: pass)" if row["strict_pass"] else
                                                            " (strict 1e-5 gate: fail)"))
    result = {"schema": "gpu-proof.compare/1", "model": Path(a.model).name, "refs": Path(a.refs).name,
              "inputs": int(len(x)), "kinds": {k: int(np.sum(refs["kind"] == k)) for k in np.unique(refs["kind"])},
              "keras_version": str(refs["keras_version"]), "onnxruntime": ort.__version__,
              "tolerance_rule": f"|diff| <= atol + {RTOL:g}*|ref|, atol = max({ATOL:g}, {FLOOR_FACTOR:g} x the model's "
                                "own float32 rounding floor on that provider (all graph optimisations vs none)); "
                                "top-1 agreement 1.0 except near-ties", "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    cuda = [r for r in rows if r["provider"] == "CUDAExecutionProvider"]
    return 0 if all(r["passed"] for r in (cuda or rows)) else 1


# ---------------------------------------------------------------- the GPU machine's environment

def _smi(*args: str) -> str:
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        return subprocess.run([smi, *args], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _loaded_versions() -> dict[str, Any]:
    """The CUDA runtime and cuDNN versions the loader really finds (after onnxruntime.preload_dlls)."""
    import ctypes

    got: dict[str, Any] = {}
    for lib in ("libcudart.so.13", "libcudart.so.12"):
        try:
            v = ctypes.c_int()
            ctypes.CDLL(lib).cudaRuntimeGetVersion(ctypes.byref(v))
            got["cudart_loaded"] = f"{lib}: {v.value // 1000}.{v.value % 1000 // 10}"
            break
        except (OSError, AttributeError):
            continue
    try:
        lib = ctypes.CDLL("libcudnn.so.9")
        lib.cudnnGetVersion.restype = ctypes.c_size_t
        v = int(lib.cudnnGetVersion())
        got["cudnn_loaded"] = f"libcudnn.so.9: {v // 10000}.{v % 10000 // 100}.{v % 100}"
    except (OSError, AttributeError):
        pass
    return got


def cmd_env(a: argparse.Namespace) -> int:
    import platform
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    env: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
                           "dry": os.environ.get("GPU_PROOF_DRY") == "1"}
    q = _smi("--query-gpu=name,driver_version,memory.total", "--format=csv,noheader").strip().splitlines()
    if q:
        name, driver, mem = (x.strip() for x in q[0].split(","))
        env |= {"gpu": name, "driver": driver, "gpu_memory": mem, "gpus": len(q)}
    m = re.search(r"CUDA Version:\s*([\d.]+)", _smi())
    env["driver_cuda"] = m.group(1) if m else None
    names = ("cnnkit", "onnxruntime-gpu", "onnxruntime", "numpy", "onnx", "typer", "rich", "pydantic", "pillow",
             "matplotlib", "sympy", "pytest", "torch", "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13",
             "nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cublas-cu13", "nvidia-cufft", "nvidia-curand",
             "nvidia-cuda-nvrtc")
    env["packages"] = {n: version(n) for n in names if version(n)}
    pk = env["packages"]
    env["cuda_runtime"] = pk.get("nvidia-cuda-runtime") or pk.get("nvidia-cuda-runtime-cu13")
    env["cudnn"] = pk.get("nvidia-cudnn-cu13")
    env["cnnkit"] = pk.get("cnnkit")
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["providers_listed"] = ort.get_available_providers()
        if hasattr(ort, "get_build_info"):
            env["ort_build_info"] = ort.get_build_info()
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()  # prints what it could not load; the loader path was set by gpu_proof.sh
                env["preload_dlls"] = "called"
            except Exception as exc:  # noqa: BLE001
                env["preload_dlls"] = f"{type(exc).__name__}: {exc}"
        if hasattr(ort, "print_debug_info"):
            ort.print_debug_info()
    except ImportError as exc:
        env["onnxruntime"] = f"not importable: {exc}"
    env |= _loaded_versions()
    if env.get("cudart_loaded"):
        env["cuda_runtime"] = f"{env['cuda_runtime']} ({env['cudart_loaded']})"
    if env.get("cudnn_loaded"):
        env["cudnn"] = f"{env['cudnn']} ({env['cudnn_loaded']})"
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), platform.processor())
    env |= {"cpu": cpu, "cores": os.cpu_count()}
    if a.manifest and Path(a.manifest).is_file():
        man = dict(ln.split("=", 1) for ln in Path(a.manifest).read_text().splitlines() if "=" in ln)
        env |= {"commit": man.get("commit"), "prepared": man.get("prepared"), "wheel": man.get("onnxruntime_gpu_wheel")}
    Path(a.out).write_text(json.dumps(env, indent=1) + "\n")
    for k, v in env.items():
        if k != "packages":
            print(f"env: {k}: {v}")
    print("env: packages: " + ", ".join(f"{k} {v}" for k, v in pk.items()))
    return 0


def cmd_cuda_check(a: argparse.Namespace) -> int:
    """Does a session really run on CUDA here (session.get_providers()), with the loader path as it is now?"""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        active = ort.InferenceSession(model, so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]).get_providers()
    except Exception as exc:  # noqa: BLE001
        print(f"cuda-check: no session: {type(exc).__name__}: {exc}")
        return 1
    ok = active[0] == "CUDAExecutionProvider"
    print(f"cuda-check: onnxruntime {ort.__version__}: a session runs on {active[0]} ({'CUDA is up' if ok else 'NOT CUDA'})")
    return 0 if ok else 1


def cmd_bench_line(a: argparse.Namespace) -> int:
    b = _load(Path(a.json)) or {}
    for r in bench_rows(b):
        print(f"p50 {_fmt(r['p50_ms'])} ms, {_fmt(r['images_per_s'])} images/s on {r['active']}"
              + (" (FALLBACK)" if r["fallback"] else ""))
    return 0


def cmd_pack(a: argparse.Namespace) -> int:
    """results/ -> one .tgz; if over 15 MiB, the raw per-inference samples are dropped from the bench JSON."""
    import tarfile

    res, out = Path(a.results), Path(a.out)
    for attempt in (0, 1):
        with tarfile.open(out, "w:gz") as tar:
            tar.add(res, arcname="results")
        if out.stat().st_size <= 15 * 2**20 or attempt:
            break
        for p in res.glob("*.json"):
            d = _load(p)
            if isinstance(d, dict) and d.get("cases"):
                for c in d["cases"]:
                    c.pop("samples_ns", None)
                p.write_text(json.dumps(d))
        print("pack: over 15 MiB with the raw samples; packed again without them")
    print(f"pack: {out} {out.stat().st_size / 2**20:.2f} MiB")
    return 0


# ---------------------------------------------------------------- checks

def cmd_check_deps(a: argparse.Namespace) -> int:
    """Every base requirement of the installed cnnkit is met here (markers evaluated), else exit 1."""
    from importlib import metadata

    from packaging.requirements import Requirement

    bad = 0
    reqs = [Requirement(r) for r in metadata.requires("cnnkit") or []]
    for req in reqs:
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            have = None
        ok = have is not None and req.specifier.contains(have, prereleases=True)
        bad += not ok
        print(f"check-deps: {req.name}{req.specifier} -> {have or 'MISSING'} {'ok' if ok else 'NOT MET'}")
    print(f"check-deps: cnnkit {metadata.version('cnnkit')}: " + ("all base requirements met" if not bad else f"{bad} not met"))
    return 1 if bad else 0


def out_problems(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    problems, files = [], []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(not OUT_NAME.match(part) for part in rel.parts):
            problems.append(f"{rel}: a name with other characters than letters, digits, '.', '_', '-'")
        if p.is_symlink():
            problems.append(f"{rel}: a link")
        elif p.is_file():
            files.append((str(rel), p.stat().st_size))
            if len(rel.parts) > OUT_MAX_DEPTH:
                problems.append(f"{rel}: more than 2 folders down")
            if p.stat().st_size > OUT_MAX_FILE:
                problems.append(f"{rel}: {p.stat().st_size / 2**20:.1f} MiB, over 16 MiB")
    if len(files) > OUT_MAX_FILES:
        problems.append(f"{len(files)} files, over {OUT_MAX_FILES}")
    if sum(s for _, s in files) > OUT_MAX_TOTAL:
        problems.append("over 64 MiB together")
    return problems, files


def cmd_check_out(a: argparse.Namespace) -> int:
    problems, files = out_problems(Path(a.dir))
    for name, size in files:
        print(f"check-out: {name} {size / 2**20:.2f} MiB")
    print(f"check-out: {len(files)} files, {sum(s for _, s in files) / 2**20:.2f} MiB together: "
          + ("fits the device tool's limits (<= 8 files, <= 16 MiB each, <= 2 folders down)" if not problems
             else "DOES NOT FIT: " + "; ".join(problems)))
    return 1 if problems else 0


# ---------------------------------------------------------------- results -> figures

def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bench_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in bench.get("cases", []):
        s = c.get("stats") or {}
        rows.append({"model": c["model"], "precision": c.get("precision"), "batch": c["batch_size"],
                     "active": (c.get("provider") or {}).get("active"), "fallback": (c.get("provider") or {}).get("fallback"),
                     "io_binding": c.get("io_binding"), "include_copies": c.get("include_copies"), "tuned": c.get("tuned"),
                     "p50_ms": s.get("p50_ms"), "p99_ms": s.get("p99_ms"), "images_per_s": s.get("images_per_s"),
                     "runs": s.get("count"), "error": c.get("error")})
    return rows


def headline(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: p50 at batch 1, and the peak images/s with its batch size."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["p50_ms"] is None:
            continue
        m = out.setdefault(f"{r['model']} ({r['precision']})", {"p50_b1_ms": None, "peak_images_per_s": 0.0,
                                                                "peak_batch": None, "active": r["active"],
                                                                "io_binding": r["io_binding"]})
        if r["batch"] == 1:
            m["p50_b1_ms"] = r["p50_ms"]
        if (r["images_per_s"] or 0) > m["peak_images_per_s"]:
            m["peak_images_per_s"], m["peak_batch"] = r["images_per_s"], r["batch"]
    return out


def collect(results: Path) -> dict[str, Any]:
    """Everything a remote run left in its results folder, reduced to the figures the page shows."""
    steps = []
    tsv = results / "steps.tsv"
    if tsv.is_file():
        for line in tsv.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                steps.append({"step": parts[0], "rc": parts[1], "seconds": parts[2], "command": parts[3]})
    env = _load(results / "env.json") or {}
    doctor = _load(results / "doctor.json") or {}
    benches = {p.stem: _load(p) for p in sorted(results.glob("bench-*.json"))}
    compare = {p.stem: _load(p) for p in sorted(results.glob("compare-*.json"))}
    parity = {p.stem: _load(p) for p in sorted(results.glob("parity-*.json"))}
    quant = {p.stem: _load(p) for p in sorted(results.glob("quantize-*.json"))}
    probe = []
    ptsv = results / "largest.tsv"
    if ptsv.is_file():
        for line in ptsv.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                probe.append({"model": parts[0], "batch": int(parts[1]), "rc": int(parts[2]), "note": parts[3]})
    pytest_line = ""
    plog = results / "pytest-gpu.log"
    if plog.is_file():
        found = re.findall(r"^=+ (.*(?:passed|failed|skipped|error|no tests ran).*) =+$", plog.read_text(), re.M)
        pytest_line = found[-1] if found else ""
    return {"steps": steps, "env": env, "doctor": doctor, "benches": benches, "compare": compare,
            "parity": parity, "quantize": quant, "largest": probe, "pytest": pytest_line}


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 1000 else f"{v:.{nd}g}"
    return str(v)


def summary_text(c: dict[str, Any]) -> str:
    lines = []
    e = c["env"]
    if e:
        lines.append(f"GPU: {e.get('gpu', '?')}; driver {e.get('driver', '?')}; CUDA runtime {e.get('cuda_runtime', '?')}; "
                     f"cuDNN {e.get('cudnn', '?')}; onnxruntime-gpu {e.get('onnxruntime', '?')}; host CPU {e.get('cpu', '?')}")
    d = c["doctor"]
    if d:
        cuda = [p for p in d.get("providers", []) if p.get("name") == "CUDAExecutionProvider"]
        lines.append("doctor --provider cuda: " + ("CUDA loads" if cuda and cuda[0].get("loads") else
                                                  f"CUDA does NOT load: {cuda[0].get('reason') if cuda else 'not listed'}")
                     + f"; problems: {len(d.get('problems', []))}")
    for name, b in c["benches"].items():
        if not b:
            lines.append(f"{name}: no result")
            continue
        for model, h in headline(bench_rows(b)).items():
            lines.append(f"{name}: {model} on {h['active']}{' (IO binding)' if h['io_binding'] else ''}: p50 at batch 1 "
                         f"{_fmt(h['p50_b1_ms'])} ms; peak {_fmt(h['peak_images_per_s'])} images/s at batch {h['peak_batch']}")
    for name, r in c["compare"].items():
        for row in (r or {}).get("rows", []):
            w = row.get("worst") or {}
            lines.append(f"{name} [{row['run']}]: " + (row.get("error") or
                         f"max |diff| {_fmt(w.get('max_abs'))}, gate atol {_fmt(row.get('atol'))}, top-1 agreement "
                         f"{_fmt(w.get('top1_agreement'), 4)}: {'PASS' if row.get('passed') else 'FAIL'}"))
    for p in c["largest"]:
        lines.append(f"largest batch probe: {p['model']} batch {p['batch']}: rc {p['rc']} {p['note']}")
    if c["pytest"]:
        lines.append(f"pytest -m gpu tests/gpu: {c['pytest']}")
    for s in c["steps"]:
        lines.append(f"step {s['step']}: rc {s['rc']} in {s['seconds']} s")
    return "\n".join(lines)


def cmd_summary(a: argparse.Namespace) -> int:
    c = collect(Path(a.results))
    print(summary_text(c))
    if a.json:
        slim = {k: v for k, v in c.items() if k not in ("benches", "doctor")}
        slim["bench"] = {n: headline(bench_rows(b)) for n, b in c["benches"].items() if b}
        Path(a.json).write_text(json.dumps(slim, indent=1, default=str) + "\n")
    return 0


def docs_section(c: dict[str, Any], gpu_seconds: float | None, dry: bool) -> str:
    e = c["env"]
    out = ["## CUDA on a real GPU (issue 23)", ""]
    if dry:
        out += ["> **Dry run on the CPU machine** (`GPU_PROOF_DRY=1`): every step ran with `--provider cuda "
                "--allow-fallback`, so the figures below are CPU figures marked FALLBACK. They check the script, "
                "not the GPU. Replace this section with a real run's.", ""]
    out += [f"- GPU: **{e.get('gpu', '?')}**, driver {e.get('driver', '?')}, CUDA runtime {e.get('cuda_runtime', '?')}, "
            f"cuDNN {e.get('cudnn', '?')}, onnxruntime-gpu {e.get('onnxruntime', '?')} (cp312 wheel from PyPI, carried in "
            "parts), Python " + str(e.get("python", "?")),
            f"- Host CPU: {e.get('cpu', '?')} ({e.get('cores', '?')} cores)",
            f"- Run: {e.get('date', '?')}, cnnkit {e.get('cnnkit', '?')} at commit {e.get('commit', '?')}",
            f"- GPU time used: {gpu_seconds / 60:.1f} minutes (device-tool lease, start-up and transfers included)"
            if gpu_seconds is not None else "- GPU time used: (pass --gpu-seconds from the device tool's lease)", ""]
    d = c["doctor"]
    if d:
        cuda = [p for p in d.get("providers", []) if p.get("name") == "CUDAExecutionProvider"]
        libs = {k: v[0] for k, v in (d.get("gpu_libraries") or {}).items() if v}
        out += ["### `cnnkit doctor --provider cuda`", "",
                "CUDA provider: " + ("**loads** (a session really runs on it)" if cuda and cuda[0].get("loads")
                                     else f"does NOT load: {cuda[0].get('reason') if cuda else 'not listed'}"),
                "", "GPUs: " + ("; ".join(f"{g['name']}, {g['memory']}, driver {g['driver']}" for g in d.get("gpus", []))
                                or "none found"),
                "", "Libraries: " + (", ".join(f"{k} ({Path(v).name})" for k, v in libs.items()) or "none found"), ""]
        if d.get("problems"):
            out += ["Problems: " + "; ".join(d["problems"]), ""]
    def rows_of(*names: str) -> list[dict[str, Any]]:
        return [r for n in names for r in bench_rows(c["benches"].get(n) or {})]

    base, gpu = headline(rows_of("bench-cpu", "bench-cpu-224")), headline(rows_of("bench-cuda", "bench-cuda-224"))
    if base or gpu:
        out += ["### Headline: p50 at batch 1 and peak throughput, CUDA beside the CPU", "",
                "| model | CPU p50 ms (b1) | CUDA p50 ms (b1) | CPU peak images/s (batch) | CUDA peak images/s (batch) |",
                "|---|---|---|---|---|"]
        for m in sorted(set(base) | set(gpu)):
            b, g = base.get(m, {}), gpu.get(m, {})
            out.append(f"| {m} | {_fmt(b.get('p50_b1_ms'))} | {_fmt(g.get('p50_b1_ms'))} | "
                       f"{_fmt(b.get('peak_images_per_s'))} ({b.get('peak_batch', '-')}) | "
                       f"{_fmt(g.get('peak_images_per_s'))} ({g.get('peak_batch', '-')}) |")
        out.append("")
    titles = {"bench-cpu": "CPU provider on the GPU machine's host CPU (baseline)",
              "bench-cuda": "CUDA, default options (IO binding, cuDNN exhaustive search, TF32 on)",
              "bench-cuda-224": "CUDA, MobileNetV2 224x224 (random weights: timing only)",
              "bench-cuda-graph": "CUDA with `--cuda-graph`",
              "bench-cuda-heuristic": "CUDA with `--cudnn-conv-algo-search heuristic`",
              "bench-cuda-copies": "CUDA with `--include-copies` (host<->device copies timed; no IO binding)",
              "bench-cuda-tune": "CUDA with `--tune` (chosen options measured)",
              "bench-cuda-fp16": "FP16 against FP32 on CUDA, interleaved in one `cnnkit bench`",
              "bench-cpu-224": "CPU provider, MobileNetV2 224x224 (baseline)"}
    order = ["bench-cuda", "bench-cuda-224", "bench-cpu", "bench-cpu-224", "bench-cuda-graph", "bench-cuda-heuristic",
             "bench-cuda-copies", "bench-cuda-tune", "bench-cuda-fp16"]
    names = [n for n in order if n in c["benches"]] + [n for n in c["benches"] if n not in order]

    def bench_section(name: str) -> None:
        nonlocal out
        b = c["benches"][name]
        out += [f"### {titles.get(name, name)}", ""]
        if not b:
            out += ["No result (see the step log).", ""]
            return
        out += ["| model | precision | batch | provider | IO binding | p50 ms | p99 ms | images/s | runs |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in bench_rows(b):
            out.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['active']}{' FALLBACK' if r['fallback'] else ''} "
                       f"| {'yes' if r['io_binding'] else 'no'} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | "
                       f"{_fmt(r['images_per_s'])} | {r['runs']} |")
        chosen = [t for t in b.get("trials", []) if t.get("chosen")]
        if chosen:
            keys = ("cudnn_conv_algo_search", "cuda_graph", "intra_op_threads", "allow_spinning")
            out += ["", "Chosen by `--tune`: " + "; ".join(
                f"{t['model']} batch {t['batch_size']}: " + ", ".join(f"{k}={t['options'][k]}" for k in keys if k in t["options"])
                for t in chosen)]
        errs = [t for t in b.get("trials", []) if t.get("error")]
        if errs:
            out += ["", "Trials ONNX Runtime refused: " + "; ".join(
                f"{t['model']} batch {t['batch_size']} cuda_graph={t['options'].get('cuda_graph')}: {t['error'][:160]}"
                for t in errs[:6])]
        out.append("")
    for name in names:
        if name != "bench-cuda-fp16":
            bench_section(name)
    if c["largest"]:
        out += ["### Largest batch that fits", "", "| model | batch | exit | note |", "|---|---|---|---|"]
        out += [f"| {p['model']} | {p['batch']:,} | {p['rc']} | {p['note']} |" for p in c["largest"]]
        out.append("")
    if c["compare"]:
        out += ["### Parity: Keras (CPU) against ONNX Runtime on CUDA", "",
                "Keras' outputs were computed on the CPU machine (TensorFlow cannot be installed on the GPU machine) "
                "on stored inputs; ONNX Runtime ran the same inputs there at batch sizes 1, 7 and 64. Tolerance: "
                f"|diff| <= atol + {RTOL:g} x |ref|, atol = max({ATOL:g}, {FLOOR_FACTOR:g} x the model's own float32 "
                "rounding floor on that provider, all graph optimisations against none) — cnnkit parity's rule — and "
                "full top-1 agreement (near-ties excepted).", "",
                "| model | run | active provider | max abs diff | gate atol | strict 1e-5 | top-1 agreement "
                "| accuracy (Keras) | verdict |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in c["compare"].values():
            for row in (r or {}).get("rows", []):
                w = row.get("worst") or {}
                if row.get("error"):
                    out.append(f"| {r['model']} | {row['run']} | - | - | - | - | - | - | ERROR: {row['error'][:120]} |")
                    continue
                acc = (f"{w['accuracy']:.2%} ({w['accuracy_ref']:.2%})" if "accuracy" in w else "-")
                out.append(f"| {r['model']} | {row['run']} | {row['active'][0]} | {_fmt(w['max_abs'])} | {_fmt(row['atol'])} "
                           f"| {'pass' if row['strict_pass'] else 'fail'} | {w['top1_agreement']:.4f} | {acc} | "
                           f"{'PASS' if row['passed'] else 'FAIL'} |")
        out.append("")
    if c["parity"] or c["quantize"]:
        out += ["### FP16 (`cnnkit quantize --mode fp16 --provider cuda`) against FP32", "",
                "| model | gate | accuracy FP16 (FP32) | top-1 agreement | max abs diff | size "
                "| p50 FP32 -> FP16 (ms, measured by quantize) |",
                "|---|---|---|---|---|---|---|"]
        for name, q in c["quantize"].items():
            if not q:
                out.append(f"| {name} | no result (see the step log) | | | | | |")
                continue
            sp = q.get("speed") or {}
            speed = "; ".join(f"b{b}: {_fmt(sp['fp32_p50_ms'][b])} -> {_fmt((sp.get('variant_p50_ms') or {}).get(b))}"
                              for b in (sp.get("fp32_p50_ms") or {}))
            acc = (f"{q['accuracy']:.2%} ({q['fp32_accuracy']:.2%})" if q.get("accuracy") is not None
                   and q.get("fp32_accuracy") is not None else "-")
            gate = "pass" if q.get("passed") else "FAIL: " + "; ".join(q.get("failures") or [])[:160]
            out.append(f"| {q.get('source', name)} | {gate} "
                       f"| {acc} | {_fmt(q.get('top1_agreement'), 4)} | {_fmt((q.get('parity') or {}).get('max_abs'))} "
                       f"| {_fmt(q.get('size_ratio'))}x smaller | {speed} on {sp.get('provider', '-')} |")
        for p in c["parity"].values():
            if p:
                ran_on = (p.get("provider") or {}).get("providers", ["?"])[0]
                out += ["", f"`cnnkit parity {p['reference']} {p['candidate']}` on {ran_on}: "
                        f"{'PASS' if p.get('passed') else 'FAIL'} (gate: top-1 agreement >= "
                        f"{(p.get('tolerance') or {}).get('min_top1_agreement')}, accuracy drop <= "
                        f"{(p.get('tolerance') or {}).get('max_accuracy_drop_pp')} points)"]
        out.append("")
    if "bench-cuda-fp16" in c["benches"]:
        bench_section("bench-cuda-fp16")
    if c["pytest"]:
        out += [f"### `pytest -m gpu tests/gpu` on the GPU machine: {c['pytest']}", ""]
    if c["steps"]:
        out += ["### Exact commands, in order (exit code, seconds)", "", "```console"]
        out += [f"$ {s['command']}    # exit {s['rc']}, {s['seconds']} s" for s in c["steps"]]
        out += ["```", ""]
    return "\n".join(out)


def cmd_docs(a: argparse.Namespace) -> int:
    results = Path(a.results)
    c = collect(results)
    section = docs_section(c, a.gpu_seconds, a.dry or bool((c["env"] or {}).get("dry")))
    doc = Path(a.doc)
    start, end = "<!-- gpu-proof -->", "<!-- /gpu-proof -->"
    text = doc.read_text() if doc.is_file() else ("# Benchmarks on a GPU\n\nFigures measured by "
                                                  "[`scripts/gpu_proof.sh`](../scripts/gpu_proof.sh); the plan and "
                                                  "the device calls are at the top of that script.\n\n")
    block = f"{start}\n{section}\n{end}"
    text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S) if start in text \
        else text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    print(f"docs: wrote the section into {doc} ({len(section.splitlines())} lines)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    # name -> (function, [(flags, add_argument keywords)])
    table: dict[str, tuple[Any, list[tuple[tuple[str, ...], dict[str, Any]]]]] = {
        "images": (cmd_images, [(("dir",), {}), (("--per-class",), {"type": int, "default": 8})]),
        "mobilenet": (cmd_mobilenet, [(("out",), {}), (("--alpha",), {"type": float, "default": 0.35}),
                                      (("--size",), {"type": int, "default": 96}),
                                      (("--classes",), {"type": int, "default": 10}),
                                      (("--epochs",), {"type": int, "default": 3})]),
        "keras-refs": (cmd_keras_refs, [(("model",), {}), (("out",), {}), (("--samples",), {"type": int, "default": 200}),
                                        (("--preprocess",), {"default": "raw"})]),
        "compare": (cmd_compare, [(("refs",), {}), (("model",), {}), (("--json",), {}),
                                  (("--no-cuda",), {"action": "store_true",
                                                    "help": "the CPU row only (a dry run without a GPU)"})]),
        "env": (cmd_env, [(("out",), {}), (("--manifest",), {})]),
        "bench-line": (cmd_bench_line, [(("json",), {})]),
        "cuda-check": (cmd_cuda_check, []),
        "pack": (cmd_pack, [(("results",), {}), (("out",), {})]),
        "check-deps": (cmd_check_deps, []),
        "check-out": (cmd_check_out, [(("dir",), {})]),
        "summary": (cmd_summary, [(("results",), {}), (("--json",), {})]),
        "docs": (cmd_docs, [(("results",), {}), (("doc",), {}), (("--gpu-seconds",), {"type": float}),
                            (("--dry",), {"action": "store_true"})]),
    }
    for name, (fn, args) in table.items():
        p = sub.add_parser(name)
        for flags, kw in args:
            p.add_argument(*flags, **kw)
        p.set_defaults(fn=fn)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
