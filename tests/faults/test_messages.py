"""Issue 19: messages that mislead, and the reliability items found by fault injection. Each case fails on the
code before the fix: the wrong word, a missing hint, a wrong exit code, or a file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_idx_dir
from tests.faults.models import tiny_cnn
from tests.faults.test_faults import assert_clean, assert_fails, cli


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_cnn(tmp_path / "model.onnx")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_idx_dir(tmp_path / "mnist", n_train=40, n_test=20)


# --- 8. outputs in folders that do not exist; the pipeline's lock file ------------------------------------


@pytest.mark.parametrize("kind", ["json", "onnx", "maps"])
def test_output_in_a_missing_folder_is_refused(model: Path, data: Path, tmp_path: Path, kind: str) -> None:
    missing = tmp_path / "no" / "such"
    target = {"json": missing / "e.json", "onnx": missing / "q.onnx", "maps": missing / "maps"}[kind]
    args = {
        "json": ("eval", model, "--data-dir", data, "--json", target),
        "onnx": ("quantize", model, "-o", target, "--data-dir", data),
        "maps": ("featuremaps", model, "--index", "0", "--data-dir", data, "-o", target),
    }[kind]
    assert_fails(cli(*args), str(target), f"the folder {target.parent} does not exist", f"mkdir -p {target.parent}")
    assert not (tmp_path / "no").exists()  # nothing made on the way


def test_pipeline_lock_is_removed_on_every_exit(tmp_path: Path) -> None:
    from cnnkit.errors import CnnkitError
    from cnnkit.pipeline import LOCK_FILE, PipelineConfig, _run_lock, run_pipeline

    out = tmp_path / "run"
    out.mkdir()
    with _run_lock(out):
        assert (out / LOCK_FILE).exists()
    assert not (out / LOCK_FILE).exists()
    with pytest.raises(KeyboardInterrupt), _run_lock(out):
        raise KeyboardInterrupt
    assert not (out / LOCK_FILE).exists()
    # A run that fails after taking the lock (its data cannot be loaded) leaves no lock behind either.
    with pytest.raises(CnnkitError, match="does not exist"):
        run_pipeline(PipelineConfig(dataset="mnist", data_dir=tmp_path / "nothing", out_dir=out, report_dir=tmp_path / "r"))
    assert (out / "pipeline.json").exists() and not (out / LOCK_FILE).exists()
    assert_clean(out)
