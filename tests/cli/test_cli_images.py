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
    assert data["dataset"]["kind"] == "image folder" and data["dataset"]["labels_from"] == "sorted folder names"
    assert data["images_per_s"] > 0 and "top-5" in result.stdout


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
