"""Image folders and the preprocessing record through the CLI: eval (top-1/top-5, streaming, bad files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli_foundation import assert_user_error, run
from tests.imaging import tiny_classifier, write_digit_folder


def _direct_scores(model: Path, pixels: np.ndarray, scale: float, layout: str) -> np.ndarray:
    """What onnxruntime says for the pixels, preprocessed by hand (not through cnnkit's record)."""
    import onnxruntime as ort

    x = pixels.astype(np.float32) * scale
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": np.ascontiguousarray(x)})[0]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_eval_on_an_image_folder_matches_onnxruntime(tmp_path: Path, layout: str) -> None:
    """Real MNIST digits written as 32x32 RGB PNGs; a 32x32x3 model; --preprocess unit; top-1 and top-5 by hand."""
    pixels, labels = write_digit_folder(tmp_path / "digits", n=60, size=32, rgb=True)
    model = tiny_classifier(tmp_path / "m.onnx", layout=layout)
    result = run("eval", model, "--data-dir", tmp_path / "digits", "--preprocess", "unit", "--json", tmp_path / "e.json",
                 "--batch-size", "16")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "e.json").read_text())
    scores = _direct_scores(model, pixels, 1 / 255, layout)
    m = data["models"][0]
    assert m["samples"] == 60 and m["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == labels))
    top5 = np.argsort(-scores, axis=1)[:, :5]
    assert m["top5_accuracy"] == pytest.approx(np.mean(np.any(top5 == labels[:, None], axis=1)))
    assert m["preprocess"]["name"] == "unit" and m["preprocess"]["layout"] == layout
    assert data["dataset"]["kind"] == "image folder" and data["dataset"]["labels_from"] == "folder names as class indices (0..9)"
    assert data["images_per_s"] > 0 and "top-5" in result.stdout
    assert "read as class indices" not in result.output  # "0".."9" in sorted order: nothing to say


def test_imagenet_index_folders_for_a_1000_class_model(tmp_path: Path) -> None:
    """Class folders named by ImageNet index (281/, 967/), no --labels: eval, parity and quantize read them as the
    model's class indices (75 %, the truth: 3 of 4 images are the colour their folder's class knows), and say so.
    Folders that are not indices are labelled 0, 1 as before, with a warning on their count and on the 0 %."""
    from tests.imaging import colour_keyed_classifier, write_colour_folder

    red, blue = (220, 30, 30), (30, 30, 220)
    model = colour_keyed_classifier(tmp_path / "m.onnx", {281: red, 967: blue}, classes=1000)
    write_colour_folder(tmp_path / "val", {"281": [red, red], "967": [blue, red]})
    r = run("eval", model, "--data-dir", tmp_path / "val", "--json", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["models"][0]["accuracy"] == pytest.approx(0.75)
    assert e["dataset"]["labels_from"] == "folder names as class indices (0..999)"
    assert "281/, 967/ read as class indices of the model's 1000 classes" in " ".join(r.output.split())
    r = run("parity", model, model, "--data-dir", tmp_path / "val")
    assert r.exit_code == 0 and "reference 75.00 %" in r.stdout, r.output
    r = run("quantize", model, "--mode", "fp16", "--data-dir", tmp_path / "val", "-o", tmp_path / "q.onnx")
    assert r.exit_code == 0 and "accuracy 75.00 % vs FP32 75.00 %" in r.stdout, r.output
    assert "read as class indices" in " ".join(r.output.split())

    write_colour_folder(tmp_path / "named", {"cat": [red, red], "dog": [blue, blue]})
    r = run("eval", model, "--data-dir", tmp_path / "named", "--json", tmp_path / "n.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "n.json").read_text())["models"][0]["accuracy"] == 0
    said = " ".join(r.output.split())
    assert "2 class folder(s) labelled 0..1 in sorted name order, but the model has 1000 classes" in said
    assert "0 % top-1 on 4 images labelled by sorted folder names" in said and "--labels FILE" in said


def test_grey_28px_digits_are_resized_for_a_colour_model(tmp_path: Path) -> None:
    """MNIST 28x28 grey PNGs into a 48x48x3 model: resized and made RGB by the record, not refused."""
    from PIL import Image

    pixels, labels = write_digit_folder(tmp_path / "digits", n=30)
    model = tiny_classifier(tmp_path / "m.onnx", size=(48, 48))
    result = run("eval", model, "--data-dir", tmp_path / "digits", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    assert "no preprocessing record" in result.stderr  # a model from elsewhere: raw pixels, said so
    resized = np.stack([np.asarray(Image.fromarray(p).resize((48, 48), Image.Resampling.BILINEAR)) for p in pixels])
    scores = _direct_scores(model, resized, 1.0, "NCHW")
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["models"][0]["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == labels))
    assert data["models"][0]["preprocess"]["size"] == [48, 48]


def test_eval_bad_images_and_unlabelled_folders(tmp_path: Path) -> None:
    write_digit_folder(tmp_path / "digits", n=20)
    bad = tmp_path / "digits" / "3" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    model = tiny_classifier(tmp_path / "m.onnx", size=(28, 28), channels=1,
                            metadata={"preprocess": '{"name": "raw"}'})  # the model says how: no notice
    assert_user_error(run("eval", model, "--data-dir", tmp_path / "digits"), str(bad), "--skip-bad-images")
    ok = run("eval", model, "--data-dir", tmp_path / "digits", "--skip-bad-images", "--json", tmp_path / "e.json")
    assert ok.exit_code == 0, ok.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["skipped_images"]["count"] == 1 and data["models"][0]["samples"] == 20
    assert "skipped 1 unreadable image" in ok.stderr
    write_digit_folder(tmp_path / "flat", n=5, labelled=False)
    assert_user_error(run("eval", model, "--data-dir", tmp_path / "flat"), "unlabelled", "subfolder per class")
    assert_user_error(run("eval", model, "--data-dir", tmp_path / "digits", "--preprocess", "imagenet"),
                      "unknown preprocessing preset 'imagenet'")
    assert_user_error(run("eval", model, "--data-dir", tmp_path / "digits", "--mean", "0.5,x"), "--mean: 'x' is not a number")
    assert_user_error(run("eval", model, "--data-dir", tmp_path / "digits", "--labels", tmp_path / "none.txt"),
                      "cannot read labels file")


def test_labels_file_names_the_model_classes(tmp_path: Path) -> None:
    write_digit_folder(tmp_path / "digits", n=20)
    names = tmp_path / "labels.txt"
    names.write_text("\n".join(["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"]) + "\n")
    model = tiny_classifier(tmp_path / "m.onnx", size=(28, 28), channels=1)
    a = run("eval", model, "--data-dir", tmp_path / "digits", "--json", tmp_path / "a.json")
    b = run("eval", model, "--data-dir", tmp_path / "digits", "--labels", names, "--json", tmp_path / "b.json")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    ja, jb = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert jb["class_names"][0] == "9" and jb["dataset"]["labels_from"].startswith("labels file")
    cm_a, cm_b = np.array(ja["models"][0]["confusion"]), np.array(jb["models"][0]["confusion"])
    assert cm_a.sum() == cm_b.sum() == 20 and not np.array_equal(cm_a, cm_b)  # true classes moved to 9 - digit


def test_eval_of_50000_images_streams_in_bounded_memory(tmp_path: Path) -> None:
    """50,000 hard links to a handful of real PNGs, fed to a 64x64x3 model: held at once they would need 614 MB
    as uint8 (2.4 GB as float32). Peak RSS beyond a 500-image run of the same command stays under 1 GiB."""
    write_digit_folder(tmp_path / "src", n=20, labelled=False)
    sources = sorted((tmp_path / "src").iterdir())
    big = tmp_path / "big"
    for c in range(10):
        (big / str(c)).mkdir(parents=True)
        for i in range(5000):
            os.link(sources[(c + i) % len(sources)], big / str(c) / f"{i:05d}.png")
    small = tmp_path / "small"
    for c in range(10):
        (small / str(c)).mkdir(parents=True)
        for i in range(50):
            os.link(sources[(c + i) % len(sources)], small / str(c) / f"{i:05d}.png")
    model = tiny_classifier(tmp_path / "m.onnx", size=(64, 64), classes=10)

    def peak_rss_mib(folder: Path) -> tuple[float, dict]:
        out = tmp_path / f"{folder.name}.json"
        code = ("import resource, subprocess, sys; "
                "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
                "sys.stderr.write(r.stderr[-2000:])")
        proc = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "cnnkit", "eval", str(model),
                               "--data-dir", str(folder), "--json", str(out), "--batch-size", "256"],
                              capture_output=True, text=True, timeout=600)
        rc, kib = proc.stdout.split()
        assert rc == "0", proc.stderr
        return int(kib) / 1024, json.loads(out.read_text())

    base, _ = peak_rss_mib(small)
    peak, data = peak_rss_mib(big)
    assert data["models"][0]["samples"] == 50_000
    print(f"peak RSS: {peak:.0f} MiB for 50,000 images, {base:.0f} MiB for 500; {data['images_per_s']:.0f} images/s")
    assert peak - base < 1024


def _mnist_model(tmp_path: Path) -> Path:
    """A 28x28x1 NHWC classifier that says, as cnnkit's exports do, its dataset, classes and preprocessing."""
    from cnnkit.data.preprocess import PRESETS

    record = PRESETS["unit"].bind(28, 28, 1, "NHWC", "float32")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return tiny_classifier(tmp_path / "mnist.onnx", layout="NHWC", size=(28, 28), channels=1,
                           metadata={"dataset": "mnist", "class_names": json.dumps(names), "preprocess": record.to_json()})


def test_predict_top_k_with_names_and_an_inversion_warning(tmp_path: Path) -> None:
    import onnxruntime as ort
    from PIL import Image, ImageOps

    pixels, labels = write_digit_folder(tmp_path / "digits", n=3, labelled=False)
    files = sorted((tmp_path / "digits").iterdir())
    ImageOps.invert(Image.open(files[0])).save(tmp_path / "inverted.png")
    Image.open(files[1]).resize((56, 56)).convert("RGB").save(tmp_path / "big-rgb.png")
    model = _mnist_model(tmp_path)
    result = run("predict", model, files[0], tmp_path / "inverted.png", tmp_path / "big-rgb.png", "--top-k", "3", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    first, inverted, big = data["predictions"]
    want = ort.InferenceSession(str(model)).run(None, {"images": pixels[:1, ..., None].astype(np.float32) / 255})[0][0]
    assert [c["index"] for c in first["top"]] == list(np.argsort(-want)[:3])
    assert first["top"][0]["probability"] == pytest.approx(float(want.max()), rel=1e-5)
    assert first["top"][0]["name"] == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][first["top"][0]["index"]]
    assert not first["warnings"] and not big["warnings"]  # a 56x56 RGB copy is fitted to 28x28 grey
    assert len(inverted["warnings"]) == 1 and "looks inverted against mnist" in inverted["warnings"][0]
    assert "looks inverted" in result.stderr and str(tmp_path / "inverted.png") in result.stderr
    assert data["reference"]["dataset"] == "mnist" and data["reference"]["border_mean"] < 10
    assert data["output"]["kind"] == "probabilities" and data["preprocess"]["name"] == "unit"
    text = run("predict", model, files[0])
    assert text.exit_code == 0 and "1. " in text.stdout and "%" in text.stdout and "classes from the model's class names" in text.stdout


def test_predict_bad_inputs_are_one_line(tmp_path: Path) -> None:
    model = _mnist_model(tmp_path)
    assert_user_error(run("predict", model, tmp_path / "none.png"), "image", "none.png not found")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert_user_error(run("predict", model, tmp_path / "bad.png"), "bad.png cannot be read")
    write_digit_folder(tmp_path / "d", n=1, labelled=False)
    img = next((tmp_path / "d").iterdir())
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert_user_error(run("predict", model, img, "--labels", tmp_path / "labels.txt"), "10 outputs but 2 class names")
    assert_user_error(run("predict", model, img, "--top-k", "0"), "--top-k must be positive")
    assert_user_error(run("predict", model, img, "--preprocess", "unit", "--channel-order", "rgba"), "--channel-order")


def test_parity_on_an_unlabelled_image_folder(tmp_path: Path) -> None:
    """ONNX vs ONNX on real digits (unlabelled JPEG-free PNG folder), NHWC reference against an NCHW candidate."""
    write_digit_folder(tmp_path / "imgs", n=12, size=32, rgb=True, labelled=False)
    nchw = tiny_classifier(tmp_path / "nchw.onnx", layout="NCHW")
    nhwc = tiny_classifier(tmp_path / "nhwc.onnx", layout="NHWC")  # same seeded weights, other layout
    result = run("parity", nhwc, nchw, "--data-dir", tmp_path / "imgs", "--preprocess", "unit", "--batch-sizes", "1,5",
                 "--json", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["passed"] and data["inputs"]["counts"]["dataset"] == 12 and not data["inputs"]["dataset"]["labelled"]
    assert data["inputs"]["preprocess"]["layout"] == "NCHW" and data["outputs"][0]["max_abs"] < 1e-5


def test_static_int8_calibrates_on_an_image_folder(tmp_path: Path) -> None:
    """Real digits as 32x32 RGB PNGs, a 32x32x3 NCHW model: a seeded calibration sample, the rest measures accuracy."""
    write_digit_folder(tmp_path / "imgs", n=80, size=32, rgb=True)
    model = tiny_classifier(tmp_path / "m.onnx")
    out = tmp_path / "q.onnx"
    result = run("quantize", model, "-o", out, "--data-dir", tmp_path / "imgs", "--preprocess", "unit",
                 "--calibration-samples", "30", "--max-accuracy-drop", "5", "--json", tmp_path / "q.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "q.json").read_text())
    d = data["dataset"]
    assert d["kind"] == "image folder" and d["calibration_samples"] == 30 and d["evaluated_samples"] == 50
    assert d["metric"] == "accuracy" and d["preprocess"]["name"] == "unit" and d["preprocess"]["layout"] == "NCHW"
    assert data["settings"]["mode"] == "static" and out.is_file() and data["accuracy"] is not None
    from cnnkit.graph.info import describe_onnx

    assert describe_onnx(out).precision == "int8-static"
    # An unlabelled folder: top-1 agreement with FP32 stands in for accuracy.
    write_digit_folder(tmp_path / "flat", n=40, size=32, rgb=True, labelled=False)
    result = run("quantize", model, "-o", tmp_path / "q2.onnx", "--data-dir", tmp_path / "flat", "--preprocess", "unit",
                 "--calibration-samples", "20", "--max-accuracy-drop", "10", "--json", tmp_path / "q2.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "q2.json").read_text())["dataset"]["metric"].startswith("top-1 agreement with FP32")


def test_quantize_without_images(tmp_path: Path) -> None:
    """FP16 needs no dataset (accuracy not checked, said so); static INT8 of a model naming no dataset is refused."""
    model = tiny_classifier(tmp_path / "m.onnx", size=(64, 64))
    result = run("quantize", model, "-o", tmp_path / "h.onnx", "--mode", "fp16", "--json", tmp_path / "h.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["accuracy"] is None and "accuracy not checked" in result.stdout and data["parity"]["passed"]
    assert_user_error(run("quantize", model, "-o", tmp_path / "s.onnx"), "static INT8 calibrates on real images",
                      "--data-dir", progress_ok=True)
    assert not (tmp_path / "s.onnx").exists()


def test_quantize_auto_on_an_image_folder(tmp_path: Path) -> None:
    write_digit_folder(tmp_path / "imgs", n=40, size=16, rgb=True)
    model = tiny_classifier(tmp_path / "m.onnx", size=(16, 16))
    result = run("quantize", model, "-o", tmp_path / "best.onnx", "--auto", "--data-dir", tmp_path / "imgs",
                 "--preprocess", "unit", "--calibration-samples", "16", "--max-accuracy-drop", "10", "--batch-size", "8",
                 "--json", tmp_path / "auto.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "auto.json").read_text())
    built = [c for c in data["candidates"] if c["error"] is None and c["name"] != "fp32"]
    assert any(c["name"].startswith("static") for c in built) and (tmp_path / "best.onnx").is_file()


def test_featuremaps_from_an_image_folder(tmp_path: Path) -> None:
    write_digit_folder(tmp_path / "digits", n=10)
    model = tiny_classifier(tmp_path / "m.onnx", size=(48, 48))
    result = run("featuremaps", model, "--data-dir", tmp_path / "digits", "--index", "3", "--preprocess", "unit",
                 "-o", tmp_path / "maps")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "maps" / "featuremaps.json").read_text())
    assert "(label " in data["source"] and data["source"].endswith(")") and data["preprocess"]["name"] == "unit"
    assert data["layers"][0]["shape"] == [16, 48, 48]  # 28x28 grey digit fitted to the 48x48x3 model


def test_bench_inputs_go_through_the_record(tmp_path: Path) -> None:
    from cnnkit.bench.inputs import make_input
    from cnnkit.data.preprocess import PRESETS
    from cnnkit.graph.info import describe_onnx

    record = PRESETS["tf"].bind(32, 32, 3, "NCHW", "float32")
    model = tiny_classifier(tmp_path / "m.onnx", metadata={"preprocess": record.to_json()})
    x = make_input(describe_onnx(model), 4, 0)
    assert x.shape == (4, 3, 32, 32) and -1 <= x.min() < -0.9 and 0.9 < x.max() <= 1  # [-1, 1], as the model takes
    result = run("bench", model, "--batch-sizes", "1", "--min-time", "0", "--min-iterations", "3", "--json", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b.json").read_text())["config"]["preprocess"][str(model)]["name"] == "tf"
