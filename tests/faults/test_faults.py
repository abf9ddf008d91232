"""Fault injection across the commands: bad inputs, broken files, full and read-only disks, signals, closed
pipes and concurrent writers. Each case asserts the exit code, one error line naming the value, no traceback,
and that nothing half-written is left (no temporary file, no staging folder, no partial output).

Models are built with onnx.helper and data are the tiny IDX sets of tests/conftest.py; only the pipeline case
trains (marked integration). Disk-full and read-only cases mount a small tmpfs and need root (skipped otherwise).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit.cli.app import app
from cnnkit.io import is_leftover
from tests.conftest import write_idx
from tests.faults.models import nan_model, no_conv_model, quantized_model, tiny_cnn, vector_model

runner = CliRunner()
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_fails(result, *fragments: str, code: int = 1, progress_ok: bool = False) -> str:
    """Exit ``code``, exactly one line on stderr that names every fragment, no traceback. Returns the line.

    ``progress_ok``: progress lines (quantize's steps) may come before the error line, which is the last."""
    assert result.exit_code == code, (result.exit_code, result.output)
    # Notes (e.g. "no preprocessing record") are not errors; every other line counts.
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("note: ")]
    assert "Traceback" not in result.output
    if code == 2:  # Click's usage errors: a box of a few lines, naming the bad value
        text = " ".join(result.stderr.split())
        for fragment in fragments:
            assert fragment in text, text
        return text
    assert len(lines) == 1 or (progress_ok and lines), result.stderr
    assert sum("error" in line for line in lines) == 1, result.stderr
    line = lines[-1]
    assert line.startswith("cnnkit: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert ".tmp-" not in line and ".staging-" not in line  # the user's path, never our temp name
    return line


def assert_clean(folder: Path, *absent: Path) -> None:
    """No temporary file or staging folder in ``folder``, and none of ``absent`` exists."""
    if folder.is_dir():
        left = [p.name for p in folder.iterdir() if is_leftover(p)]
        assert not left, left
    for path in absent:
        assert not path.exists(), path


def _png(path: Path, size: tuple[int, int] = (28, 28), mode: str = "L") -> Path:
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3 if mode == "RGB" else 1), dtype=np.uint8)
    Image.fromarray(pixels if mode == "RGB" else pixels[..., 0], mode=mode).save(path)
    return path


# --- corrupt, truncated and wrong files ------------------------------------------------------------------


def _truncated(model: Path) -> Path:
    bad = model.with_name("truncated.onnx")
    bad.write_bytes(model.read_bytes()[: len(model.read_bytes()) // 2])
    return bad


def _garbage(model: Path) -> Path:
    bad = model.with_name("garbage.onnx")
    bad.write_bytes(os.urandom(4096))
    return bad


def _empty(model: Path) -> Path:
    bad = model.with_name("empty.onnx")
    bad.write_bytes(b"")
    return bad


@pytest.mark.parametrize(
    ("command", "make_bad"),
    [
        ("eval", _truncated),
        ("bench", _truncated),
        ("parity", _garbage),
        ("quantize", _empty),
        ("featuremaps", _garbage),
        ("eval", _empty),
    ],
    ids=["eval-truncated-onnx", "bench-truncated-onnx", "parity-garbage-onnx", "quantize-empty-onnx",
         "featuremaps-garbage-onnx", "eval-empty-onnx"],
)
def test_broken_onnx(model: Path, data: Path, tmp_path: Path, command: str, make_bad) -> None:
    bad = make_bad(model)
    out = tmp_path / "out"
    args = {
        "eval": ("eval", bad, "--data-dir", data, "--json", out),
        "bench": ("bench", bad, "--batch-sizes", "1", "--min-time", "0.01", "--json", out),
        "parity": ("parity", model, bad, "--data-dir", data, "--json", out),
        "quantize": ("quantize", bad, "-o", out, "--data-dir", data),
        "featuremaps": ("featuremaps", bad, "--index", "0", "--data-dir", data, "-o", out),
    }[command]
    assert_fails(cli(*args), bad.name)
    assert_clean(tmp_path, out)


def _idx_truncated(folder: Path) -> str:
    f = folder / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:500]))
    return "truncated"


def _idx_wrong_magic(folder: Path) -> str:
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((20, 28, 28), np.uint8), magic=0x0801)
    return "wrong magic number"


def _idx_bad_gzip(folder: Path) -> str:
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    return "t10k-labels-idx1-ubyte.gz"


def _idx_missing_file(folder: Path) -> str:
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    return "t10k-labels-idx1-ubyte"


def _npz(folder: Path, **override: np.ndarray) -> Path:
    arrays = {"x_train": np.zeros((4, 28, 28), np.uint8), "y_train": np.zeros(4, np.int64),
              "x_test": np.zeros((4, 28, 28), np.uint8), "y_test": np.zeros(4, np.int64)} | override
    path = folder.parent / "data.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize(
    "make_bad",
    [_idx_truncated, _idx_wrong_magic, _idx_bad_gzip, _idx_missing_file],
    ids=["idx-truncated", "idx-wrong-magic", "idx-bad-gzip", "idx-missing-file"],
)
def test_broken_idx_data(model: Path, data: Path, tmp_path: Path, make_bad) -> None:
    fragment = make_bad(data)
    out = tmp_path / "e.json"
    assert_fails(cli("eval", model, "--data-dir", data, "--json", out), fragment)
    assert_clean(tmp_path, out)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"y_test": None}, "missing key(s) y_test"),
        ({"x_test": np.zeros((4, 32, 32), np.uint8)}, "test images have shape (32, 32, 1)"),
        ({"y_test": np.full(4, 12)}, "labels outside 0..9"),
        ({"x_test": np.full((4, 28, 28), 300.0)}, "pixels outside 0..255"),
        ({"x_test": np.zeros((3, 28, 28), np.uint8)}, "3 test images but 4 labels"),
        ({"x_test": np.full((4, 28, 28), "a")}, "x_test"),
    ],
    ids=["npz-missing-key", "npz-wrong-shape", "npz-labels-out-of-range", "npz-pixels-out-of-range",
         "npz-count-mismatch", "npz-strings"],
)
def test_bad_npz(model: Path, data: Path, tmp_path: Path, override, fragment: str) -> None:
    npz = _npz(data, **override)
    assert_fails(cli("eval", model, "--data-dir", npz, "--json", tmp_path / "e.json"), fragment)
    assert_clean(tmp_path, tmp_path / "e.json")


def test_npz_that_is_not_an_npz(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "random.npz"
    bad.write_bytes(os.urandom(1000))
    assert_fails(cli("eval", model, "--data-dir", bad), "random.npz")


@pytest.mark.parametrize(
    ("content", "command", "fragment"),
    [
        ('{"schema": "cnnkit.bench/1", "cases": [', "compare", "is not JSON"),
        ("[1, 2, 3]", "compare", "not a cnnkit result"),
        ('{"schema": "cnnkit.bench/1"', "report", "is not JSON"),
        ('{"schema": "somebody.else/1"}', "report", "not a cnnkit result"),
        ("", "compare", "is not JSON"),
    ],
    ids=["compare-truncated-json", "compare-json-list", "report-truncated-json", "report-foreign-schema",
         "compare-empty-file"],
)
def test_bad_result_files(tmp_path: Path, content: str, command: str, fragment: str) -> None:
    bad = tmp_path / "result.json"
    bad.write_text(content)
    out = tmp_path / "report"
    args = ("compare", bad, bad) if command == "compare" else ("report", bad, "-o", out)
    assert_fails(cli(*args), fragment, "result.json")
    assert_clean(tmp_path, out)


def test_report_of_a_folder_without_results(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_fails(cli("report", tmp_path / "empty", "-o", tmp_path / "r"), "holds no cnnkit results")
    assert_clean(tmp_path, tmp_path / "r")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_bytes(_png(p).read_bytes()[:500]) and p, "cannot be read"),
        (lambda p: p.mkdir(), "is not a file"),
        (lambda p: p.write_text("not a png") and p, "not an image"),
        (lambda p: None, "not found"),
    ],
    ids=["png-truncated", "png-is-a-folder", "png-not-an-image", "png-missing"],
)
def test_bad_png(model: Path, tmp_path: Path, make, fragment: str) -> None:
    png = tmp_path / "digit.png"
    make(png)
    out = tmp_path / "maps"
    assert_fails(cli("featuremaps", model, "--image", png, "-o", out), fragment, "digit.png")
    assert_clean(tmp_path, out)


# --- NaN and Inf (helper 11a's gates; these run once cnnkit.finite is on main) ----------------------------

try:
    import cnnkit.finite  # noqa: F401
    HAS_FINITE_GATES = True
except ImportError:
    HAS_FINITE_GATES = False
needs_finite_gates = pytest.mark.skipif(not HAS_FINITE_GATES, reason="NaN/Inf gates (issue 11, helper 11a) not on this branch")


@needs_finite_gates
def test_nan_pixels_in_an_npz(model: Path, data: Path, tmp_path: Path) -> None:
    x = np.zeros((4, 28, 28), np.float32)
    x[2, 3, 4] = np.nan
    npz = _npz(data, x_test=x)
    assert_fails(cli("eval", model, "--data-dir", npz, "--json", tmp_path / "e.json"), "non-finite pixel")
    assert_clean(tmp_path, tmp_path / "e.json")


@needs_finite_gates
def test_model_that_outputs_nan_fails_eval(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    assert_fails(cli("eval", nan_model(tmp_path / "nan.onnx"), "--data-dir", data, "--json", out), "NaN")
    assert_clean(tmp_path, out)


@needs_finite_gates
def test_parity_against_a_nan_model_never_passes(model: Path, data: Path, tmp_path: Path) -> None:
    result = cli("parity", model, nan_model(tmp_path / "nan.onnx"), "--data-dir", data, "--atol", "1000",
                 "--min-agreement", "0", "--json", tmp_path / "p.json")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert json.loads((tmp_path / "p.json").read_text())["passed"] is False


@needs_finite_gates
def test_featuremaps_of_a_nan_model_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    line = assert_fails(cli("featuremaps", nan_model(tmp_path / "nan.onnx", conv=True), "--index", "0", "--data-dir", data,
                            "-o", out),
                        "non-finite", "nan.onnx")
    assert "layer" in line or "output" in line
    assert not out.exists()


@needs_finite_gates
def test_nan_option_value(model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    assert_fails(cli("quantize", model, "-o", out, "--data-dir", data, "--max-accuracy-drop", "nan"), "nan")
    assert_clean(tmp_path, out)


# --- models of the wrong kind --------------------------------------------------------------------------


def test_model_with_a_vector_input(data: Path, tmp_path: Path) -> None:
    assert_fails(cli("eval", vector_model(tmp_path / "v.onnx"), "--data-dir", data), "not an image tensor")


def test_model_with_two_inputs(data: Path, tmp_path: Path) -> None:
    assert_fails(cli("bench", vector_model(tmp_path / "two.onnx", 2), "--batch-sizes", "1"), "with one input; this one has 2")


def test_model_with_fewer_classes_than_the_labels(data: Path, tmp_path: Path) -> None:
    three = tiny_cnn(tmp_path / "three.onnx", classes=3)
    assert_fails(cli("eval", three, "--data-dir", data), "has 3 outputs", "10 classes")


def test_quantize_of_a_quantized_model(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    assert_fails(cli("quantize", quantized_model(tmp_path / "int8.onnx"), "-o", out, "--data-dir", data),
                 "int8.onnx is already quantized")
    assert_clean(tmp_path, out)


def test_featuremaps_of_a_model_without_convolutions(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    assert_fails(cli("featuremaps", no_conv_model(tmp_path / "nc.onnx"), "--index", "0", "--data-dir", data, "-o", out),
                 "has no convolution layers")
    assert_clean(tmp_path, out)


# --- bad option values: named in the message -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments", "code"),
    [
        (("bench", "{model}", "--batch-sizes", "1,x"), ("'x' is not a number",), 1),
        (("bench", "{model}", "--batch-sizes", "0"), ("got 0",), 1),
        (("eval", "{model}", "--dataset", "cifar"), ("unknown dataset 'cifar'",), 1),
        (("quantize", "{model}", "-o", "q.onnx", "--mode", "int3"), ("'int3'",), 2),
        (("compare", "a.json", "b.json", "--max-latency-regression", "lots"), ("'lots' is not a number",), 1),
        (("eval", "{model}", "--data-dir", "{data}", "--limit", "-2"), ("--limit", "-2"), 1),
        (("parity", "{model}", "{model}", "--samples", "0"), ("--samples", "0"), 1),
        (("featuremaps", "{model}", "--index", "99", "--data-dir", "{data}", "-o", "maps"), ("--index 99",), 1),
        (("featuremaps", "{model}", "-o", "maps"), ("exactly one input",), 1),
    ],
    ids=["batch-sizes-text", "batch-sizes-zero", "unknown-dataset", "bad-mode", "bad-regression", "negative-limit",
         "zero-samples", "index-out-of-range", "featuremaps-no-input"],
)
def test_bad_option_values(model: Path, data: Path, args, fragments, code: int) -> None:
    filled = [str(a).format(model=model, data=data) for a in args]
    assert_fails(cli(*filled), *fragments, code=code)


# --- refusals that protect the user's files ---------------------------------------------------------------


def test_quantize_onto_its_own_input_is_refused(model: Path, data: Path, tmp_path: Path) -> None:
    before = model.read_bytes()
    assert_fails(cli("quantize", model, "-o", model, "--force", "--data-dir", data), "is the input model")
    assert model.read_bytes() == before
    # The same file by another spelling, and through a hard link, is refused too.
    assert_fails(cli("quantize", model, "-o", tmp_path / "." / "model.onnx", "--force", "--data-dir", data), "is the input")
    os.link(model, tmp_path / "link.onnx")
    assert_fails(cli("quantize", model, "-o", tmp_path / "link.onnx", "--force", "--data-dir", data), "is the input")
    assert model.read_bytes() == before
    assert_clean(tmp_path)


def test_export_onto_its_own_input_is_refused(tmp_path: Path) -> None:
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK\x03\x04 a keras file")
    assert_fails(cli("export", keras_file, "-o", keras_file, "--force"), "is the input model")
    assert keras_file.read_bytes() == b"PK\x03\x04 a keras file"


def test_existing_json_is_kept_without_force(model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    out.write_text("mine")
    assert_fails(cli("eval", model, "--data-dir", data, "--json", out), "already exists", "--force")
    assert out.read_text() == "mine"


def test_model_path_that_is_a_folder(data: Path, tmp_path: Path) -> None:
    assert_fails(cli("eval", tmp_path, "--data-dir", data), str(tmp_path))


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_model(model: Path, data: Path) -> None:
    model.chmod(0)
    try:
        assert_fails(cli("eval", model, "--data-dir", data), "model.onnx")
    finally:
        model.chmod(0o644)


def test_json_below_a_file(model: Path, data: Path, tmp_path: Path) -> None:
    assert_fails(cli("eval", model, "--data-dir", data, "--json", model / "e.json"), "model.onnx")


def test_name_too_long(model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / ("n" * 300 + ".json")
    assert_fails(cli("eval", model, "--data-dir", data, "--json", out), "File name too long", "nnnn")
    assert_clean(tmp_path)


def test_name_at_the_limit_is_written(model: Path, data: Path, tmp_path: Path) -> None:
    """A 255-byte name is legal: the temporary name beside it must fit the limit too."""
    out = tmp_path / ("n" * 250 + ".json")
    result = cli("eval", model, "--data-dir", data, "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["schema"] == "cnnkit.eval/1"
    assert_clean(tmp_path)


def test_json_dash_is_pure_json_on_stdout(model: Path, data: Path) -> None:
    result = cli("eval", model, "--data-dir", data, "--json", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["schema"] == "cnnkit.eval/1"


# --- data provenance and no silent data switch ----------------------------------------------------------


def test_quantize_auto_does_not_switch_data_silently(tmp_path: Path) -> None:
    """The model says Fashion-MNIST, which cannot be had offline: one line naming it, not a run on digits."""
    model = tiny_cnn(tmp_path / "fashion.onnx", dataset="fashion_mnist")
    out = tmp_path / "best.onnx"
    assert_fails(cli("quantize", model, "-o", out, "--auto"), "cannot load fashion_mnist", "--data-dir")
    assert_clean(tmp_path, out)


def test_the_models_dataset_is_the_default(model: Path, tmp_path: Path) -> None:
    """The model says MNIST and no data is given: MNIST it is (offline, the digits shipped with cnnkit)."""
    out = tmp_path / "e.json"
    result = cli("eval", model, "--limit", "50", "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["dataset"]["name"] == "mnist"


@pytest.mark.digits
def test_another_dataset_only_when_named_and_said(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = cli("eval", model, "--dataset", "digits", "--limit", "20", "--json", out)
    assert result.exit_code == 0, result.output
    assert "using digits as asked (--dataset digits); model.onnx was trained on mnist" in result.stderr
    recorded = json.loads(out.read_text())["dataset"]
    assert recorded["name"] == "digits" and "was trained on mnist" in recorded["notice"]


def test_a_data_dir_names_the_data(data: Path, tmp_path: Path) -> None:
    """A model trained on digits, run with --data-dir of MNIST files: those files, and a note saying so."""
    model = tiny_cnn(tmp_path / "digits.onnx", dataset="digits")
    out = tmp_path / "e.json"
    result = cli("eval", model, "--data-dir", data, "--json", out)
    assert result.exit_code == 0, result.output
    assert f"using mnist from {data}; digits.onnx was trained on digits" in " ".join(result.stderr.split())
    assert json.loads(out.read_text())["dataset"]["test_samples"] == 20


def test_results_record_the_data_files(model: Path, data: Path, tmp_path: Path) -> None:
    from cnnkit.io import sha256_file

    out = tmp_path / "e.json"
    assert cli("eval", model, "--data-dir", data, "--json", out).exit_code == 0
    recorded = json.loads(out.read_text())["dataset"]
    images = str(data / "t10k-images-idx3-ubyte.gz")
    assert recorded["files"][images] == sha256_file(images)
    assert recorded["train_samples"] == 40 and recorded["test_samples"] == 20 and len(recorded["content_sha256"]) == 64


# --- full and read-only disks (root: a small tmpfs) -----------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def full_fs(small_fs: Path) -> Path:
    """A tmpfs with (almost) no space left."""
    with open(small_fs / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError:
            pass
    return small_fs


@pytest.fixture
def read_only_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Root: a tmpfs remounted read-only (chmod does not stop root). Others: a folder without write permission."""
    if not IS_ROOT:
        folder = tmp_path / "locked"
        folder.mkdir()
        (folder / "existing.json").write_text("{}")
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    small_fs = request.getfixturevalue("small_fs")
    (small_fs / "existing.json").write_text("{}")
    if subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True).returncode:
        pytest.skip("cannot remount read-only")
    yield small_fs


def _output_args(kind: str, model: Path, data: Path, folder: Path) -> tuple[tuple[object, ...], Path]:
    target = {"json": folder / "e.json", "onnx": folder / "q.onnx", "maps": folder / "maps", "report": folder / "report"}[kind]
    args = {
        "json": ("eval", model, "--data-dir", data, "--json", target),
        "onnx": ("quantize", model, "-o", target, "--data-dir", data, "--calibration-samples", "8", "--eval-samples", "10",
                 "--max-accuracy-drop", "100"),
        "maps": ("featuremaps", model, "--index", "0", "--data-dir", data, "-o", target),
        "report": ("report", data.parent / "result.json", "-o", target),
    }[kind]
    return args, target


def _bench_result(model: Path, folder: Path) -> Path:
    out = folder / "result.json"
    assert cli("bench", model, "--batch-sizes", "1", "--min-time", "0.01", "--min-iterations", "5", "--warmup", "1",
               "--json", out).exit_code == 0
    return out


@pytest.mark.parametrize("kind", ["json", "onnx", "maps", "report"])
@pytest.mark.parametrize(("fs", "reason"), [("full_fs", "No space left on device"), ("read_only_fs", "Read-only file system")],
                         ids=["disk-full", "read-only"])
def test_output_on_a_full_or_read_only_disk(model: Path, data: Path, request: pytest.FixtureRequest, fs: str,
                                            reason: str, kind: str) -> None:
    if kind == "report":
        _bench_result(model, data.parent)
    folder = request.getfixturevalue(fs)
    if fs == "read_only_fs" and not IS_ROOT:
        reason = "Permission denied"
    before = {p.name: p.stat().st_size for p in folder.iterdir()}
    args, target = _output_args(kind, model, data, folder)
    assert_fails(cli(*args), str(target), reason, progress_ok=kind == "onnx")
    assert_clean(folder, target)
    assert {p.name: p.stat().st_size for p in folder.iterdir()} == before  # what was there is untouched


# --- signals and closed pipes (real processes) ------------------------------------------------------------


def _cnnkit(*args: object, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnkit", *map(str, args)], stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
                         ids=["sigterm-mid-bench", "sigint-mid-bench"])
def test_signal_mid_run_leaves_nothing(model: Path, tmp_path: Path, sig: int, code: int, word: str) -> None:
    """Ctrl-C and SIGTERM while bench times: one line, exit 130/143, no --json file.

    The child gets SIGINT's default disposition back: a test run started as a background job of a script
    (`pytest ... &`) inherits SIGINT ignored, and a program that inherits it ignored rightly stays deaf to it
    (Python installs its Ctrl-C handler only over the default), which once hung this test for 60 s."""
    out = tmp_path / "bench.json"
    proc = _cnnkit("bench", model, "--batch-sizes", "1", "--min-time", "60", "--json", out, stdout=subprocess.DEVNULL,
                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    maps = Path(f"/proc/{proc.pid}/maps")
    if maps.exists():  # mid-run: ONNX Runtime is loaded (however slow the start on a loaded machine)
        _wait_for(lambda: proc.poll() is not None or "onnxruntime" in maps.read_text())
    time.sleep(4)  # started and timing
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"cnnkit: {word}") and "Traceback" not in err, err
    assert_clean(tmp_path, out)


def test_sigkill_mid_write_never_leaves_a_partial_file(model: Path, tmp_path: Path) -> None:
    """SIGKILL cannot be caught: a temporary file may stay, but the final name is complete or absent."""
    out = tmp_path / "bench.json"
    proc = _cnnkit("bench", model, "--batch-sizes", "1", "--min-time", "60", "--json", out, stdout=subprocess.DEVNULL)
    time.sleep(4)
    proc.kill()
    proc.communicate(timeout=60)
    assert not out.exists()


def test_closed_stdout_is_one_line_exit_1(model: Path, data: Path) -> None:
    proc = _cnnkit("eval", model, "--data-dir", data, "--confusion", stdout=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line (as `| head -0` would)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note: ")]
    assert lines == [lines[0]] and "standard output was closed" in lines[0] and "Traceback" not in err, err


def test_tensorflow_logs_are_not_replayed_on_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04" + os.urandom(200))
    proc = subprocess.run([sys.executable, "-m", "cnnkit", "export", str(bad), "-o", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error: ") and "broken.keras" in lines[0], proc.stderr
    assert_clean(tmp_path, tmp_path / "m.onnx")


# --- concurrent writers -----------------------------------------------------------------------------------


def test_two_writers_of_one_output_leave_one_whole_file(model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    args = ("quantize", model, "-o", out, "--data-dir", data, "--calibration-samples", "8", "--eval-samples", "10",
            "--max-accuracy-drop", "100", "--force")
    procs = [_cnnkit(*args, stdout=subprocess.DEVNULL), _cnnkit(*args, "--mode", "dynamic", stdout=subprocess.DEVNULL)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    import onnx

    onnx.checker.check_model(onnx.load(str(out)))  # one complete model, not a mix
    assert_clean(tmp_path)


def test_second_pipeline_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    import fcntl

    from cnnkit.errors import CnnkitError
    from cnnkit.pipeline import LOCK_FILE, PipelineConfig, run_pipeline

    out = tmp_path / "run"
    out.mkdir()
    (out / "pipeline.json").write_text("{}")
    with open(out / LOCK_FILE, "w") as held:  # as a running pipeline holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CnnkitError, match="another cnnkit pipeline is running in"):
            run_pipeline(PipelineConfig(dataset="digits", out_dir=out, report_dir=tmp_path / "r"))


# --- the pipeline: a closed stdout and a SIGKILL cost no finished work -----------------------------------


@pytest.mark.integration
def test_pipeline_survives_closed_stdout_and_sigkill(tmp_path: Path) -> None:
    out, report = tmp_path / "run", tmp_path / "report"
    args = ("pipeline", "--dataset", "digits", "--epochs", "1", "--batch-sizes", "1,4", "--bench-min-time", "0.02",
            "--max-accuracy-drop", "50", "--out", out, "--report-dir", report)
    # 1. The reader of stdout leaves at once: every stage still runs and is recorded.
    proc = _cnnkit(*args, stdout=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "standard output was closed" in err and "Traceback" not in err, err
    state = json.loads((out / "pipeline.json").read_text())
    assert {s["status"] for s in state["stages"].values()} == {"done"}, state
    assert state["versions"]["onnxruntime"] or state["versions"]["onnxruntime-gpu"]
    # 2. A changed budget redoes from quantize on; SIGKILL it in the middle of a stage.
    again = (*args[:10], "49", *args[11:])

    def running_after_parity() -> bool:  # the records of step 1 say "done"; only this run marks one "running"
        try:
            stages = json.loads((out / "pipeline.json").read_text())["stages"]
        except (OSError, ValueError):
            return False
        return any(stages[s]["status"] == "running" for s in ("quantize", "eval", "bench"))

    proc = _cnnkit(*again, stdout=subprocess.DEVNULL)
    _wait_for(running_after_parity, timeout=300)
    proc.kill()
    proc.communicate(timeout=60)
    (out / ".staging-deadbeef").mkdir()  # what a kill inside training leaves
    (out / ".model.best.tmp-deadbeef.onnx").write_bytes(b"half")
    # 3. The re-run needs no --force, cleans the leftovers and reuses what was finished.
    proc = _cnnkit(*again, stdout=subprocess.PIPE)
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    for stage in ("train", "export", "parity"):
        assert f"{stage} reused" in stdout, stdout
    assert "quantize done" in stdout
    assert_clean(out)
    assert_clean(tmp_path)
    state = json.loads((out / "pipeline.json").read_text())
    assert {s["status"] for s in state["stages"].values()} <= {"done", "reused"}
