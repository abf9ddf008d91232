"""eval --engine ray on a real local Ray cluster: the same figures as the local eval, a killed worker loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli_foundation import run
from tests.imaging import tiny_classifier, write_digit_folder

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'cnnkit[ray]')")


@pytest.fixture(scope="module")
def ray_local() -> str:
    """One local Ray cluster (2 CPUs) for the module; its GCS address. Stopped, with its processes, at the end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """300 real MNIST digits as 32x32 RGB PNGs in class folders, one empty (bad) file, two tiny classifiers."""
    root = tmp_path_factory.mktemp("ray-eval")
    write_digit_folder(root / "digits", n=300, size=32, rgb=True)
    (root / "digits" / "3" / "broken.png").write_bytes(b"")
    return root / "digits", tiny_classifier(root / "a.onnx"), tiny_classifier(root / "b.onnx", layout="NHWC", seed=3)


def _figures(result: dict) -> dict:
    """Everything but timings, environment and the session options (Ray workers use one thread each)."""
    models = [{k: v for k, v in m.items() if k != "provider"} | {"provider": m["provider"].get("active")}
              for m in result["models"]]
    return {"dataset": result["dataset"], "class_names": result["class_names"], "models": models,
            "skipped_images": result["skipped_images"]}


def test_distributed_eval_equals_local_eval_figure_for_figure(ray_local: str, digits: tuple[Path, Path, Path],
                                                              tmp_path: Path) -> None:
    """Through the CLI, against the running cluster (--address): top-1, top-5, per class, confusion, agreement,
    skipped files: identical to the local eval; the engine section says what ran."""
    folder, a, b = digits
    common = ("eval", a, b, "--data-dir", folder, "--preprocess", "unit", "--batch-size", "32", "--skip-bad-images")
    local = run(*common, "--json", tmp_path / "local.json")
    assert local.exit_code == 0, local.output
    # A separate process, so that it really connects to the cluster through --address.
    dist = subprocess.run([sys.executable, "-m", "cnnkit", *map(str, common), "--engine", "ray", "--address", ray_local,
                           "--workers", "2", "--json", str(tmp_path / "ray.json")],
                          capture_output=True, text=True, timeout=600)
    assert dist.returncode == 0, dist.stderr[-2000:]
    lo, di = json.loads((tmp_path / "local.json").read_text()), json.loads((tmp_path / "ray.json").read_text())
    assert _figures(di) == _figures(lo)
    assert lo["models"][0]["samples"] == 300 and di["skipped_images"]["count"] == 1  # the empty file, named
    assert "broken.png" in di["skipped_images"]["examples"][0]
    assert 0 < lo["models"][0]["accuracy"] < 1 and lo["models"][1]["top5_accuracy"] is not None
    engine = di["engine"]
    assert engine["engine"] == "ray" and engine["workers"] == 2 and engine["nodes"] == 1
    assert engine["images_expected"] == engine["images_returned"] == 301 and engine["batch_size"] == 32
    assert engine["images_per_s"] > 0 and engine["wall_s"] > 0
    assert "engine ray" in dist.stdout and lo.get("engine") is None


def test_a_worker_killed_mid_run_loses_no_image(ray_local: str, digits: tuple[Path, Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted fault: the first worker to claim the marker file exits hard (os._exit) in the middle of the run.
    Ray restarts it and retries its batch; every image is counted exactly once and the figures equal the local
    eval's."""
    from cnnkit.data.preprocess import PreprocessChoice
    from cnnkit.distributed.ray_eval import KILL_ONCE_ENV, evaluate_on_ray
    from cnnkit.evaluate.accuracy import EvalConfig, evaluate_models

    folder, a, _ = digits
    config = EvalConfig((a,), data_dir=folder, batch_size=16, preprocess=PreprocessChoice(preset="unit"),
                        skip_bad_images=True)
    marker = tmp_path / "kill-once"
    marker.write_text("")
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    dist = evaluate_on_ray(config, workers=2).to_dict()
    claimed = list(tmp_path.glob("kill-once.claimed-by-*"))
    assert not marker.exists() and len(claimed) == 1  # a worker really died
    monkeypatch.delenv(KILL_ONCE_ENV)
    local = evaluate_models(config).to_dict()
    assert _figures(dist) == _figures(local)
    assert dist["engine"]["images_returned"] == dist["engine"]["images_expected"] == 301
    assert dist["dataset"]["evaluated_samples"] == 300


def test_lost_or_doubled_images_are_an_error_not_a_figure() -> None:
    from cnnkit.data.folders import ImageFolder
    from cnnkit.distributed.ray_eval import _check_every_image_once
    from cnnkit.errors import CnnkitError

    folder = ImageFolder(Path("/data/imgs"), ("a.png", "b.png", "c.png"), np.zeros(3, np.int64), ("x",), "sorted")
    _check_every_image_once(np.array([2, 0, 1]), 3, folder)
    with pytest.raises(CnnkitError, match=r"2 results for 3 images: 1 missing, 0 counted more than once \(e.g. b.png\)"):
        _check_every_image_once(np.array([0, 2]), 3, folder)
    with pytest.raises(CnnkitError, match="4 results for 3 images: 0 missing, 1 counted more than once"):
        _check_every_image_once(np.array([0, 1, 1, 2]), 3, folder)


def test_engine_errors_are_one_line(digits: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """No cluster is started for these: a dataset in memory, an unknown engine, --workers without ray, no Ray."""
    folder, a, _ = digits
    r = run("eval", a, "--dataset", "digits", "--engine", "ray")
    assert r.exit_code == 1 and "--engine ray evaluates image folders" in r.stderr
    r = run("eval", a, "--data-dir", folder, "--engine", "spark")
    assert r.exit_code == 1 and "unknown --engine 'spark'" in r.stderr
    r = run("eval", a, "--data-dir", folder, "--workers", "2")
    assert r.exit_code == 1 and "--workers needs --engine ray" in r.stderr
    # What the workers would fail to build (LiteRT without a .tflite) fails once, on the driver, before Ray starts.
    r = run("eval", a, "--data-dir", folder, "--preprocess", "unit", "--engine", "ray", "--runtime", "litert")
    assert r.exit_code == 1 and r.stderr.count("cnnkit: error:") == 1 and "Traceback" not in r.output, r.output
    r = subprocess.run([sys.executable, "-m", "cnnkit", "eval", str(a), "--data-dir", str(folder), "--preprocess", "unit",
                        "--engine", "ray", "--address", "127.0.0.1:1"], capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in lines[0], r.stderr
    code = ("import sys\nsys.modules['ray'] = None\n"
            f"sys.argv = ['cnnkit', 'eval', {str(a)!r}, '--data-dir', {str(folder)!r}, '--engine', 'ray']\n"
            "from cnnkit.cli.app import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and 'pip install "cnnkit[ray]"' in lines[0], r.stderr


def test_quantize_checks_accuracy_through_the_distributed_eval(ray_local: str, digits: tuple[Path, Path, Path],
                                                               tmp_path: Path) -> None:
    """Static INT8 calibrated on a seeded, bounded sample of the folder; the accuracy-aware loop's checks run on
    Ray workers and give the local run's figures."""
    from cnnkit.data.preprocess import PreprocessChoice
    from cnnkit.quantize.config import QuantizeConfig
    from cnnkit.quantize.loop import quantize_model

    folder, a, _ = digits
    results = {}
    for engine in ("local", "ray"):
        config = QuantizeConfig(a, tmp_path / f"{engine}.onnx", data_dir=folder, calibration_samples=64,
                                max_accuracy_drop=50, preprocess=PreprocessChoice(preset="unit"), skip_bad_images=True,
                                measure_speed=False, engine=engine)
        results[engine] = quantize_model(config).to_dict()
    lo, di = results["local"], results["ray"]
    for key in ("fp32_accuracy", "accuracy", "drop_pp", "top1_agreement", "excluded_nodes"):
        assert di[key] == lo[key], key
    # 301 files, one of them empty: 64 drawn (seed 0) for calibration, the others measure accuracy.
    calib, evaluated = di["dataset"]["calibration_samples"], di["dataset"]["evaluated_samples"]
    assert (calib, evaluated) == (lo["dataset"]["calibration_samples"], lo["dataset"]["evaluated_samples"])
    assert calib + evaluated == 300 and di["dataset"]["accuracy_engine"] == "ray"
    assert di["dataset"]["skipped_images"]["count"] == lo["dataset"]["skipped_images"]["count"]


def test_nan_scores_are_an_error_as_in_the_local_eval(ray_local: str, digits: tuple[Path, Path, Path],
                                                      tmp_path: Path) -> None:
    """A model whose output is log(p - 0.05): NaN wherever a class has p < 0.05. Same error as locally, no figure."""
    import onnx
    from onnx import helper, numpy_helper

    from cnnkit.data.preprocess import PreprocessChoice
    from cnnkit.distributed.ray_eval import evaluate_on_ray
    from cnnkit.evaluate.accuracy import EvalConfig, evaluate_models
    from cnnkit.finite import NonFiniteError

    folder, a, _ = digits
    m = onnx.load(str(a))
    m.graph.initializer.append(numpy_helper.from_array(np.array(0.05, np.float32), "c"))
    m.graph.node.extend([helper.make_node("Sub", ["probabilities", "c"], ["shifted"]),
                         helper.make_node("Log", ["shifted"], ["logp"])])
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("logp", onnx.TensorProto.FLOAT, ["batch", 10]))
    onnx.save(m, str(tmp_path / "nan.onnx"))
    config = EvalConfig((tmp_path / "nan.onnx",), data_dir=folder, batch_size=64,
                        preprocess=PreprocessChoice(preset="unit"), skip_bad_images=True)
    with pytest.raises(NonFiniteError) as local:
        evaluate_models(config)
    with pytest.raises(NonFiniteError) as dist:
        evaluate_on_ray(config, workers=1)
    assert str(dist.value) == str(local.value) and "non-finite output value(s)" in str(local.value)


def test_the_config_chooses_the_engine(ray_local: str, digits: tuple[Path, Path, Path]) -> None:
    """Library first: EvalConfig holds and checks the engine, and run_eval runs where it says."""
    from dataclasses import replace

    from cnnkit.data.preprocess import PreprocessChoice
    from cnnkit.distributed.engine import run_eval
    from cnnkit.errors import CnnkitError
    from cnnkit.evaluate.accuracy import EvalConfig

    folder, a, _ = digits
    with pytest.raises(CnnkitError, match="unknown --engine 'spark'"):
        EvalConfig((a,), engine="spark")
    with pytest.raises(CnnkitError, match="--workers needs --engine ray"):
        EvalConfig((a,), workers=2)
    local = EvalConfig((a,), data_dir=folder, preprocess=PreprocessChoice(preset="unit"), skip_bad_images=True)
    here = run_eval(local).to_dict()
    on_ray = run_eval(replace(local, engine="ray", address=ray_local, workers=2)).to_dict()
    assert not here.get("engine") and on_ray["engine"]["workers"] == 2
    assert _figures(on_ray) == _figures(here)
