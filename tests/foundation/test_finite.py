"""NaN and Inf are failures everywhere: planted in real ONNX graphs (built with onnx.helper), in data and in training.

The planted graphs are a small softmax classifier of 28x28x1 images plus ``0 * Log(Reduce(x))``: where the
reduction is 0 the term is ``0 * -inf = NaN``, so the outputs of exactly those images are NaN and every other
output equals the clean model's. ``sum`` hits all-zero images only; ``min`` hits any image with a 0 pixel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from tests.cli.test_cli_foundation import assert_user_error, run


def classifier(path: Path, nan_when: str | None = None, seed: int = 0) -> Path:
    """A float32 softmax classifier ``images [N,28,28,1] -> probabilities [N,10]``; see the module docstring."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.normal(0, 1, (784, 10)) / 28).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-1, 784], np.int64), "flat"),
             numpy_helper.from_array(np.array([1 / 255], np.float32), "scale"),
             numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([0.0], np.float32), "zero")]
    nodes = [helper.make_node("Reshape", ["images", "flat"], ["x2"]), helper.make_node("Mul", ["x2", "scale"], ["xs"]),
             helper.make_node("MatMul", ["xs", "w"], ["logits"])]
    if nan_when is None:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    else:
        op = {"sum": "ReduceSum", "min": "ReduceMin"}[nan_when]
        nodes += [helper.make_node("Softmax", ["logits"], ["p"], axis=1),
                  helper.make_node(op, ["images", "axes"] if op == "ReduceSum" else ["images"], ["r"], keepdims=1,
                                   **({} if op == "ReduceSum" else {"axes": [1, 2, 3]})),
                  helper.make_node("Reshape", ["r", "flat1"], ["r1"]), helper.make_node("Log", ["r1"], ["lg"]),
                  helper.make_node("Mul", ["lg", "zero"], ["nan_or_0"]),
                  helper.make_node("Add", ["p", "nan_or_0"], ["probabilities"])]
        inits.append(numpy_helper.from_array(np.array([-1, 1], np.int64), "flat1"))
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dataset_npz(path: Path, n_train: int = 64, n_test: int = 200, zero_test: tuple[int, ...] = (),
                nan_pixel: bool = False) -> Path:
    """An MNIST-shaped .npz of random (never all-zero) images; ``zero_test`` images are all 0."""
    rng = np.random.default_rng(1)
    x_train = rng.integers(1, 256, (n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(1, 256, (n_test, 28, 28), dtype=np.uint8)
    for i in zero_test:
        x_test[i] = 0
    arrays = {"x_train": x_train, "y_train": rng.integers(0, 10, n_train), "x_test": x_test,
              "y_test": rng.integers(0, 10, n_test)}
    if nan_pixel:
        arrays["x_test"] = arrays["x_test"].astype(np.float32)
        arrays["x_test"][5, 3, 4] = np.nan
    np.savez(path, **arrays)
    return path


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    return {"clean": classifier(tmp_path / "clean.onnx"), "zeros": classifier(tmp_path / "zeros.onnx", "sum"),
            "any0": classifier(tmp_path / "any0.onnx", "min")}


def test_planted_graph_is_nan_only_where_planted(models: dict[str, Path]) -> None:
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

    x = np.random.default_rng(0).integers(1, 256, (4, 28, 28, 1)).astype(np.float32)
    x[2] = 0
    clean = OnnxRuntimeRunner(models["clean"]).infer({"images": x})["probabilities"]
    planted = OnnxRuntimeRunner(models["zeros"]).infer({"images": x})["probabilities"]
    assert np.isnan(planted[2]).all() and np.array_equal(np.delete(planted, 2, 0), np.delete(clean, 2, 0))


def test_nonfinite_counts_and_first_sample() -> None:
    from cnnkit.finite import merge, nonfinite

    a = np.zeros((5, 3))
    assert nonfinite(a) is None and nonfinite(np.arange(4)) is None
    a[3, 1], a[4, 0], a[4, 2] = np.nan, np.inf, -np.inf
    got = nonfinite(a, offset=10)
    assert (got.count, got.samples, got.first) == (3, 2, 13)
    assert merge(nonfinite(a), got).first == 3


# --- parity ----------------------------------------------------------------------------------------------


def test_parity_fails_on_nan_in_under_one_percent_of_samples(models: dict[str, Path], tmp_path: Path) -> None:
    """2 all-zero edge-case inputs of 228 (0.9 %): top-1 agreement alone (>= 0.99) used to let them through."""
    from cnnkit.parity.check import ParityConfig, check_parity

    npz = dataset_npz(tmp_path / "mnist.npz")
    r = check_parity(ParityConfig(models["clean"], models["zeros"], dataset="mnist", data_dir=npz))
    assert r.inputs["total"] == 228 and not r.passed
    d = r.outputs[0]
    assert d.nonfinite_candidate == 20 and d.first_nonfinite == 216  # 200 dataset + 16 random, then the zeros
    assert any("candidate gives 20 non-finite value(s) (NaN/Inf) in 2 sample(s), first in sample 216 (zeros)" in f
               for f in r.failures)
    assert d.max_abs == 0.0  # the finite elements still agree exactly
    json.dumps(r.to_dict(), allow_nan=False)  # strict JSON: no NaN slips into the result


def test_parity_nan_fails_even_with_loose_tolerances(models: dict[str, Path], tmp_path: Path) -> None:
    result = run("parity", models["clean"], models["zeros"], "--dataset", "none", "--atol", "1e9",
                 "--min-agreement", "0", "--json", tmp_path / "p.json")
    assert result.exit_code == 1, result.output
    assert "PARITY FAIL" in result.stdout and "NaN/Inf" in result.stdout
    data = json.loads((tmp_path / "p.json").read_text(), parse_constant=_reject)
    assert data["passed"] is False and data["outputs"][0]["nonfinite_candidate"] > 0


@pytest.mark.parametrize("option", ["--atol", "--rtol", "--min-agreement", "--max-accuracy-drop"])
def test_parity_rejects_nonfinite_tolerances(models: dict[str, Path], option: str) -> None:
    assert_user_error(run("parity", models["clean"], models["clean"], option, "nan"), option, "finite number")


def test_layer_table_marks_nan_rows() -> None:
    from cnnkit.parity.layers import LayerDiff, _first_divergence

    rows = [LayerDiff("conv", "Conv2D", "t1", "NHWC", (1, 4), 0.0, 1.0, 0.0, False),
            LayerDiff("dense", "Dense", "t2", "NHWC", (1, 4), None, 1.0, None, True, nonfinite=3)]
    first, why = _first_divergence(rows, 1e-4)
    assert first == "dense" and "3 NaN/Inf" in why


# --- eval, bench, data ---------------------------------------------------------------------------------


def test_eval_fails_naming_count_and_first_image(models: dict[str, Path], tmp_path: Path) -> None:
    npz = dataset_npz(tmp_path / "mnist.npz", zero_test=(3, 150))
    result = run("eval", models["clean"], models["zeros"], "--dataset", "mnist", "--data-dir", npz,
                 "--json", tmp_path / "e.json")
    assert_user_error(result, "zeros.onnx: 20 non-finite output value(s) (NaN/Inf) in 2 image(s), first in image 3",
                      progress_ok=True)
    assert not (tmp_path / "e.json").exists()
    assert run("eval", models["clean"], "--dataset", "mnist", "--data-dir", npz).exit_code == 0


def test_bench_checks_the_warmup_outputs(models: dict[str, Path], tmp_path: Path) -> None:
    result = run("bench", models["any0"], "--batch-sizes", "2", "--min-time", "0", "--min-iterations", "1",
                 "--json", tmp_path / "b.json")
    assert_user_error(result, "any0.onnx at batch 2", "warm-up", "non-finite value(s) (NaN/Inf) in 2 sample(s), first in sample 0",
                      progress_ok=True)
    assert not (tmp_path / "b.json").exists()


def test_nan_pixels_in_npz_are_an_error(tmp_path: Path) -> None:
    from cnnkit.data.datasets import load_dataset

    npz = dataset_npz(tmp_path / "mnist.npz", nan_pixel=True)
    with pytest.raises(CnnkitError, match=r"mnist.npz: test data holds 1 non-finite pixel\(s\) \(NaN/Inf\) in 1 image\(s\), first in image 5"):
        load_dataset("mnist", npz)


# --- quantize ----------------------------------------------------------------------------------------------


def test_quantize_variant_failing_parity_is_not_written(models: dict[str, Path], tmp_path: Path) -> None:
    """The FP32 model scores fine on the test split, but parity's all-zero inputs give NaN: the gate fails."""
    npz = dataset_npz(tmp_path / "mnist.npz")
    out = tmp_path / "q.onnx"
    result = run("quantize", models["zeros"], "-o", out, "--dataset", "mnist", "--data-dir", npz, "--mode", "dynamic",
                 "--max-accuracy-drop", "100")
    assert_user_error(result, "fails its gate", "parity vs FP32", "NaN/Inf", "not written", "--keep-failed", progress_ok=True)
    assert not out.exists()


def test_keep_failed_writes_a_variant_marked_failed(models: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    npz = dataset_npz(tmp_path / "mnist.npz")
    out = tmp_path / "q.onnx"
    args = ("quantize", models["clean"], "-o", out, "--dataset", "mnist", "--data-dir", npz, "--mode", "dynamic",
            "--max-accuracy-drop", "-50", "--max-attempts", "0")
    assert_user_error(run(*args), "cannot meet the -50 pp accuracy budget", "not written", progress_ok=True)
    assert not out.exists()
    result = run(*args, "--keep-failed", "--json", tmp_path / "q.json")
    assert result.exit_code == 1, result.output
    assert "GATE FAIL" in result.stderr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["cnnkit_gate"] == "failed" and "accuracy budget" in json.loads(meta["cnnkit_gate_failures"])[0]
    data = json.loads((tmp_path / "q.json").read_text(), parse_constant=_reject)
    assert data["passed"] is False and data["failures"]


def test_quantize_refuses_to_replace_its_source(models: dict[str, Path], tmp_path: Path) -> None:
    before = models["clean"].read_bytes()
    result = run("quantize", models["clean"], "-o", models["clean"], "--force", "--mode", "dynamic")
    assert_user_error(result, "is the input model", "never replaced")
    assert models["clean"].read_bytes() == before


def test_quantize_rejects_nan_budget(models: dict[str, Path], tmp_path: Path) -> None:
    assert_user_error(run("quantize", models["clean"], "-o", tmp_path / "q.onnx", "--max-accuracy-drop", "nan"),
                      "--max-accuracy-drop must be a finite number")


# --- strict JSON -------------------------------------------------------------------------------------------


def _reject(constant: str) -> None:
    raise ValueError(f"non-standard JSON constant {constant}")


def test_json_writer_is_strict(tmp_path: Path) -> None:
    from cnnkit.io import write_json_atomic

    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()


# --- training ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", ["nan", "inf"])
def test_train_rejects_nonfinite_lr(tmp_path: Path, lr: str) -> None:
    assert_user_error(run("train", "--dataset", "digits", "--out", tmp_path / "m", "--lr", lr), "--lr must be a finite number")
    assert not (tmp_path / "m" / "model.keras").exists()


@pytest.mark.integration
def test_training_stops_on_a_nonfinite_loss_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = run("train", "--dataset", "digits", "--out", out, "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3",
                 "--limit-train", "300", "--limit-test", "50")
    assert_user_error(result, "training of mnist-cnn stopped: the training loss became nan at epoch 1", "nothing was written",
                      "lower --lr", progress_ok=True)
    assert not out.exists() or not [p for p in out.iterdir()]


def test_one_sign_for_accuracy_changes() -> None:
    """The pipeline once printed +0.05 pp where its report said -0.05 pp: both now use accuracy_change_pp."""
    from cnnkit.evaluate.accuracy import accuracy_change_pp
    from cnnkit.report.build import ReportInputs, markdown
    from cnnkit.results.load import from_dict

    assert accuracy_change_pp(0.9805, 0.98) == pytest.approx(-0.05)
    # A real quantize result (tests/golden), its accuracies set to the case the sign once went wrong on.
    data = json.loads((Path(__file__).resolve().parents[1] / "golden" / "v0.1.0" / "quantize-fp16.json").read_text())
    data.update(accuracy=0.98, fp32_accuracy=0.9805, budget_pp=0.1)
    q = from_dict(data, "q.json")
    text = markdown(ReportInputs({"cnnkit.quantize/1": [(Path("q.json"), q)]}), {}, "t")
    assert "(-0.05 pp, drop budget 0.1 pp)" in text


def test_predict_fails_on_nan_scores(models: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "grey.png")
    result = run("predict", models["zeros"], tmp_path / "black.png", "--json", tmp_path / "p.json")
    assert_user_error(result, "zeros.onnx gives 10 non-finite score(s) (NaN/Inf) for", "black.png", progress_ok=True)
    assert not (tmp_path / "p.json").exists()
    assert run("predict", models["zeros"], tmp_path / "grey.png").exit_code == 0
