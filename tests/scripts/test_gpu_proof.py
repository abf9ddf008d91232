"""scripts/gpu_proof.py's pure parts: the parity measures, the $OUT limits and the benchmark page, on made-up data."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_proof", ROOT / "scripts" / "gpu_proof.py")
gp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gp)


def test_compare_arrays_gates_like_cnnkit_parity() -> None:
    ref = np.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5 - 1e-7]], np.float32)
    same = gp.compare_arrays(ref, ref + 1e-6, atol=1e-5, rtol=1e-4, labels=np.array([1, 0, -1]))
    assert same["passed"] and same["top1_agreement"] == 1.0 and same["accuracy"] == 1.0
    off = gp.compare_arrays(ref, ref + np.array([[0, 0], [0, 1e-3], [0, 0]], np.float32), atol=1e-5, rtol=1e-4)
    assert not off["passed"] and off["needed_atol"] == pytest.approx(1e-3 - 1e-4 * 0.3, rel=1e-3)
    # A flip where the reference's top two are within the tolerance is a near-tie, not a failure.
    tie = gp.compare_arrays(ref, ref[:, ::-1] * 0 + np.array([[0.1, 0.9], [0.7, 0.3], [0.5 - 1e-7, 0.5]]), 1e-5, 1e-4)
    assert tie["flips"] == 1 and tie["near_ties"] == 1 and tie["passed"]


def test_golden_pixels_are_real_then_random_and_edge_cases() -> None:
    real = np.full((3, 4, 4, 1), 7, np.uint8)
    g = gp.golden_pixels((4, 4, 1), real, np.array([1, 2, 3]))
    assert g["pixels"].shape == (31, 4, 4, 1) and g["pixels"].dtype == np.uint8
    assert list(g["labels"][:3]) == [1, 2, 3] and (g["labels"][3:] == -1).all()
    assert (g["pixels"][g["kind"] == "full"] == 255).all() and (g["pixels"][g["kind"] == "zeros"] == 0).all()


def test_out_check_enforces_the_device_tools_limits(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.log").write_text("x")
    assert gp.out_problems(out)[0] == []
    for i in range(8):
        (out / f"f{i}.json").write_text("{}")
    (out / "a" / "b" / "c").mkdir(parents=True)
    (out / "a" / "b" / "c" / "deep.txt").write_text("x")
    (out / "bad name.txt").write_text("x")
    problems = " ".join(gp.out_problems(out)[0])
    assert "over 8" in problems and "2 folders down" in problems and "bad name.txt" in problems


def _bench(provider: str, rows: list[tuple[str, int, float]]) -> dict:
    return {"schema": "cnnkit.bench/1", "trials": [], "cases": [
        {"model": m, "precision": "fp32", "batch_size": b, "io_binding": provider == "CUDAExecutionProvider",
         "include_copies": False, "tuned": False, "provider": {"active": provider, "fallback": False},
         "stats": {"p50_ms": p50, "p99_ms": p50 * 1.1, "images_per_s": b / p50 * 1e3, "count": 50}}
        for m, b, p50 in rows]}


def test_docs_section_from_a_results_folder(tmp_path: Path) -> None:
    res = tmp_path / "results"
    res.mkdir()
    (res / "env.json").write_text(json.dumps({"gpu": "NVIDIA H100 80GB HBM3", "driver": "580.159.04",
                                              "cuda_runtime": "13.0.96", "cudnn": "9.13.0.50", "onnxruntime": "1.30.0"}))
    (res / "bench-cpu.json").write_text(json.dumps(_bench("CPUExecutionProvider", [("seed.onnx", 1, 0.08),
                                                                                   ("seed.onnx", 64, 2.0)])))
    (res / "bench-cuda.json").write_text(json.dumps(_bench("CUDAExecutionProvider", [("seed.onnx", 1, 0.05),
                                                                                     ("seed.onnx", 4096, 4.0)])))
    (res / "steps.tsv").write_text("doctor\t0\t3.1\tcnnkit doctor --provider cuda --json results/doctor.json --force\n")
    (res / "largest.tsv").write_text("seed.onnx\t8192\t0\tp50 9 ms\nseed.onnx\t16384\t1\tout of memory\n")
    (res / "pytest-gpu.log").write_text("===== 4 passed, 1 skipped in 20.1s =====\n")
    doc = tmp_path / "docs" / "benchmarks-gpu.md"
    assert gp.main(["docs", str(res), str(doc), "--gpu-seconds", "600"]) == 0
    text = doc.read_text()
    assert "NVIDIA H100 80GB HBM3" in text and "driver 580.159.04" in text and "10.0 minutes" in text
    assert "| seed.onnx (fp32) | 0.08 | 0.05 | 32,000 (64) | 1,024,000 (4096) |" in text
    assert "$ cnnkit doctor --provider cuda" in text and "4 passed, 1 skipped" in text and "| seed.onnx | 16,384 | 1 |" in text
    # Re-running replaces the section instead of adding a second one.
    assert gp.main(["docs", str(res), str(doc)]) == 0
    assert doc.read_text().count("<!-- gpu-proof -->") == 1


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_the_shell_script_parses_and_prints_its_plan_without_arguments() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_proof.sh")], check=True)
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_proof.sh")], capture_output=True, text=True)
    assert p.returncode == 2 and "THE DEVICE CALLS, IN ORDER" in p.stdout and "remote-part 1" in p.stdout
