"""report, featuremaps and the pipeline on real results; the HTML report in a real browser."""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import CnnkitError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def results(exported_model: Path, trained_model: Path, tmp_path_factory) -> list[Path]:
    from cnnkit.bench.benchmark import run_benchmark
    from cnnkit.bench.config import BenchConfig
    from cnnkit.evaluate.accuracy import EvalConfig, evaluate_models
    from cnnkit.io import write_json_atomic
    from cnnkit.parity.check import ParityConfig, check_parity

    d = tmp_path_factory.mktemp("results")
    write_json_atomic(d / "bench.json", run_benchmark(BenchConfig(
        models=(exported_model,), batch_sizes=(1, 4), min_time_s=0.0, min_iterations=5, warmup=1, profile=True,
        profile_runs=2, memory=True, memory_runs=2, cold_start=True, cold_start_runs=2, concurrency=(1, 2))).to_dict())
    write_json_atomic(d / "eval.json", evaluate_models(EvalConfig((exported_model,), dataset="digits")).to_dict())
    write_json_atomic(d / "parity.json", check_parity(ParityConfig(trained_model, exported_model, dataset="digits",
                                                                   samples=50)).to_dict())
    shutil.copy(trained_model.with_name("train.json"), d / "train.json")
    return [d]


def test_report_from_a_run_folder(results: list[Path], tmp_path: Path) -> None:
    from cnnkit.report.build import write_report

    out = tmp_path / "rep"
    written = write_report(results, out)
    assert set(written["files"]) == {"report.md", "report.html", "results.csv", "latency.png", "throughput.png",
                                     "accuracy_vs_size.png", "training_curves.png", "concurrency.png"}
    md = (out / "report.md").read_text()
    for section in ("## Environment", "## Model", "## Parity (keras-onnx): PASS", "## Accuracy",
                    "## Benchmark settings (bench.json)", "- run date: ", "- session.cpu_mem_arena: True",
                    "- concurrency: 1, 2", "## Latency and throughput", "## Operator profile", "### model.onnx, batch 4",
                    "## Memory", "## Cold start", "## Throughput vs concurrency", "## Training curves (plot)",
                    "## Accuracy vs model size (plot)", "## Throughput vs concurrency (plot)"):
        assert section in md, section
    assert "| model.onnx | on | 4 |" in md and "| model.onnx | off | 4 |" in md  # memory, arena on and off
    assert "| Conv | " in md  # the seed CNN's time goes to its convolutions
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 5
    assert "http://" not in page and "https://" not in page  # self-contained
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["kind"] for r in rows} == {"latency", "accuracy"} and len(rows) == 3
    with pytest.raises(CnnkitError, match="not empty"):
        write_report(results, out)
    write_report(results, out, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no staging folder left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"schema": "cnnkit.bench/7", "cases": []}, "which this cnnkit cannot read"),
        ({"benchmarks": [], "machine_info": {}}, "not a cnnkit result"),
    ],
)
def test_report_bad_inputs(tmp_path: Path, content, message) -> None:
    from cnnkit.report.build import write_report

    f = tmp_path / "r.json"
    f.write_text(json.dumps(content))
    with pytest.raises(CnnkitError, match=message):
        write_report([f], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnkitError, match="holds no cnnkit results"):
        write_report([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed")
def test_html_report_in_a_real_browser(results: list[Path], tmp_path: Path) -> None:
    from cnnkit.report.build import write_report

    write_report(results, tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").resolve()
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-plots="5"' in proc.stdout and 'data-plots-loaded="5"' in proc.stdout
    assert "<h2>Operator profile</h2>" in proc.stdout and "<h2>Memory</h2>" in proc.stdout
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console_errors == []


def test_featuremaps_from_png_and_dataset(exported_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    from cnnkit.data.preprocess import record_for_model
    from cnnkit.data.datasets import load_dataset
    from cnnkit.evaluate.featuremaps import feature_maps_from_dataset, load_image, save_feature_maps
    from cnnkit.graph.info import describe_onnx

    record = record_for_model(describe_onnx(exported_model))[0]
    digit = load_dataset("digits").x_test[0][..., 0]
    Image.fromarray(digit, mode="L").save(tmp_path / "digit.png")
    x = load_image(tmp_path / "digit.png", record)
    assert x.shape == (28, 28, 1) and np.array_equal(x[..., 0], digit)
    result = save_feature_maps(exported_model, x, tmp_path / "maps", "digit.png")
    assert [(layer.layer, layer.shape) for layer in result.layers] == [
        ("conv1", (32, 26, 26)), ("conv2", (64, 11, 11)), ("conv3", (64, 3, 3))]
    for layer in result.layers:
        assert (tmp_path / "maps" / layer.png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "maps" / "featuremaps.json").read_text())["predicted"] == result.predicted
    with pytest.raises(CnnkitError, match="not empty"):
        save_feature_maps(exported_model, x, tmp_path / "maps", "again")
    x2, source, images = feature_maps_from_dataset(exported_model, "digits", None, 5, record)
    assert x2.shape == (28, 28, 1) and "digits test image 5" in source and images.name == "digits"
    with pytest.raises(CnnkitError, match="out of range"):
        feature_maps_from_dataset(exported_model, "digits", None, 10_000, record)


def test_featuremaps_images_of_any_size_and_bad_files(tmp_path: Path) -> None:
    from PIL import Image

    from cnnkit.data.preprocess import PRESETS
    from cnnkit.evaluate.featuremaps import load_image

    record = PRESETS["raw"].bind(28, 28, 1, "NHWC", "float32")
    Image.new("RGB", (32, 40), (255, 255, 255)).save(tmp_path / "big.png")
    x = load_image(tmp_path / "big.png", record)
    assert x.shape == (28, 28, 1) and x.min() == 255  # resized and made grey by the record
    (tmp_path / "text.png").write_text("no image")
    with pytest.raises(CnnkitError, match="text.png cannot be read: not an image"):
        load_image(tmp_path / "text.png", record)
    with pytest.raises(CnnkitError, match="not found"):
        load_image(tmp_path / "none.png", record)


def _pipeline(out: Path, **kw):
    from cnnkit.pipeline import PipelineConfig, run_pipeline

    events = []
    config = PipelineConfig(**({"dataset": "digits", "out_dir": out, "report_dir": out.parent / "report", "epochs": 1,
                                "batch_sizes": (1, 4), "bench_min_time_s": 0.02, "max_accuracy_drop": 5.0} | kw))
    result = run_pipeline(config, lambda stage, event, detail: events.append((stage, event)))
    return result, events


def test_pipeline_runs_reuses_and_redoes(tmp_path: Path) -> None:
    from cnnkit.pipeline import STAGES

    out = tmp_path / "run"
    result, events = _pipeline(out)
    assert [s for s, e in events if e == "done"] == list(STAGES)
    for stage in ("export", "parity", "quantize"):  # a stage of seconds says what it is doing while it runs
        said = [e for s, e in events if s == stage]
        assert said[0] == "start" and said[-1] == "done" and "progress" in said[1:-1], (stage, said)
    for name in ("model.keras", "model.onnx", "model.best.onnx", "parity.json", "quantize.json", "eval.json",
                 "bench.json", "pipeline.json"):
        assert (out / name).is_file(), name
    assert (tmp_path / "report" / "report.html").is_file()
    md = (tmp_path / "report" / "report.md").read_text()
    accuracy = md.split("## Accuracy vs size")[1].split("\n## ")[0]
    assert "quantize --auto, chosen" in accuracy or "quantize --auto candidate" in accuracy  # every candidate
    scored = [c for c in json.loads((out / "quantize.json").read_text())["candidates"] if c["accuracy"] is not None]
    assert accuracy.count("\n| ") >= 1 + len(scored) - 1  # a candidate that failed its gate has no accuracy to plot
    from cnnkit.results.load import load_result

    for f in sorted(out.glob("*.json")):  # strict JSON (no NaN/Inf), every field of its schema typed
        assert load_result(f) is not None, f
    # Nothing changed: every stage is reused.
    _, events = _pipeline(out)
    assert [e for _, e in events] == ["reused"] * len(STAGES)
    # A damaged output is redone, and only what depends on it.
    onnx_bytes = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(onnx_bytes[:-10])
    _, events = _pipeline(out)
    redone = [s for s, e in events if e == "done"]
    assert redone[0] == "export" and "train" not in redone
    # The same export again: the same weights (node names may differ within one process: TF's scope counters).
    import onnx
    from onnx import numpy_helper

    def weights(model: onnx.ModelProto) -> list[bytes]:
        return sorted(numpy_helper.to_array(i).tobytes() for i in model.graph.initializer)

    assert weights(onnx.load(str(out / "model.onnx"))) == weights(onnx.load_from_string(onnx_bytes))
    # A changed setting redoes its stage and everything downstream.
    _, events = _pipeline(out, epochs=2)
    assert [s for s, e in events if e == "done"] == list(STAGES)


def test_failing_stage_stops_and_keeps_the_finished_ones(tmp_path: Path) -> None:
    import onnxruntime as ort

    from cnnkit.pipeline import PipelineStageError
    from tests.runtimes.test_sessions import CUDA_LOADS

    if CUDA_LOADS or "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs a provider that is listed but does not load")
    out = tmp_path / "run"
    with pytest.raises(PipelineStageError, match="stage parity failed") as info:
        _pipeline(out, provider="cuda")
    assert "finished stages (train, export) are kept" in info.value.one_line()
    assert (out / "model.keras").is_file() and (out / "model.onnx").is_file()
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert state["train"]["status"] == "done" and state["parity"]["status"] == "failed"
    assert state["quantize"]["status"] == "pending"
