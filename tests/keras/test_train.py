"""Tiny real training runs (a few hundred digits, 1-2 epochs) and one full run on real MNIST digits."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cnnkit.keras.build import build_model, load_keras_model
from cnnkit.data.datasets import load_dataset
from cnnkit.errors import OutputExistsError
from cnnkit.keras.spec import load_spec
from cnnkit.keras.summary import summarize_keras, summarize_spec
from cnnkit.keras.train import TrainConfig, train_model

pytestmark = pytest.mark.integration


def _tiny(out: Path, **kw) -> TrainConfig:
    base = dict(dataset="digits", out_dir=out, epochs=2, limit_train=300, limit_test=100, seed=3)
    return TrainConfig(**(base | kw))


def test_keras_model_matches_its_spec_summary() -> None:
    for name in ("mnist-cnn", "mnist-cnn-70"):
        spec = load_spec(name)
        from_keras, from_spec = summarize_keras(build_model(spec)), summarize_spec(spec)
        assert from_keras.to_dict() == from_spec.to_dict()


def test_train_writes_every_output(tmp_path: Path) -> None:
    result = train_model(_tiny(tmp_path / "run"))
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.keras", "train.json", "training_curves.png"]
    record = json.loads((out / "train.json").read_text())
    assert record["spec"]["name"] == "mnist-cnn" and record["params"] == 93_322
    assert record["dataset"]["name"] == "digits" and record["dataset"]["validation_samples"] == 30
    assert record["dataset"]["train_samples_used"] == 270 and record["dataset"]["test_samples"] == 100
    assert record["epochs_run"] == 2 and record["config"]["seed"] == 3
    assert {"train_accuracy", "val_accuracy", "test_accuracy", "test_loss"} <= set(record["metrics"])
    assert record["environment"]["packages"]["tensorflow"]
    assert record["wall_time_s"] > 0
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == 2 and {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(rows[0])
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What was saved is what was evaluated: reloading gives the recorded test accuracy.
    model = load_keras_model(out / "model.keras")
    ds = load_dataset("digits").limited(300, 100)
    acc = float(np.mean(np.argmax(model(ds.x_test.astype(np.float32)), axis=1) == ds.y_test))
    assert acc == pytest.approx(result.metrics["test_accuracy"], abs=1e-6)


def test_model_takes_raw_pixels(tmp_path: Path) -> None:
    train_model(_tiny(tmp_path / "run", epochs=1))
    model = load_keras_model(tmp_path / "run" / "model.keras")
    assert model.layers[0].name == "rescale"
    assert model.layers[0].scale == pytest.approx(1 / 255)


def test_same_seed_same_weights(tmp_path: Path) -> None:
    weights = []
    for run in ("a", "b", "c"):
        seed = 3 if run != "c" else 4
        train_model(_tiny(tmp_path / run, epochs=1, seed=seed))
        weights.append(load_keras_model(tmp_path / run / "model.keras").get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    assert not all(np.array_equal(a, c) for a, c in zip(weights[0], weights[2], strict=True))


def test_refuses_to_overwrite_and_force_replaces(tmp_path: Path) -> None:
    train_model(_tiny(tmp_path / "run", epochs=1))
    before = (tmp_path / "run" / "model.keras").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--force"):
        train_model(_tiny(tmp_path / "run", epochs=1))
    assert (tmp_path / "run" / "model.keras").stat().st_mtime_ns == before
    train_model(_tiny(tmp_path / "run", epochs=1, force=True))
    assert (tmp_path / "run" / "model.keras").stat().st_mtime_ns != before


def test_interrupted_training_leaves_no_files(tmp_path: Path) -> None:
    def interrupt(epoch: int, total: int, logs: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(_tiny(tmp_path / "run", epochs=3), on_epoch_end=interrupt)
    assert list((tmp_path / "run").iterdir()) == []


@pytest.mark.shared_data
def test_seed_setup_reaches_97_percent_on_real_mnist(shared_data: Path, tmp_path: Path) -> None:
    """docs/measurements.md's figure: defaults on the 8,000/2,000 split of the real MNIST test set."""
    result = train_model(TrainConfig(data_dir=shared_data / "mnist-t10k-split", out_dir=tmp_path / "m"))
    assert result.dataset["test_samples"] == 2000
    assert result.metrics["test_accuracy"] >= 0.97


def test_train_cli_stderr_has_no_native_log_lines(tmp_path: Path) -> None:
    """TensorFlow's C++ logger (E0000/W0000/I0000 lines, e.g. tf.data's use_unbounded_threadpool one during
    evaluate) never reaches a user's terminal on a normal run."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("CNNKIT_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
    done = subprocess.run([sys.executable, "-m", "cnnkit", "train", "--dataset", "digits", "--epochs", "1",
                           "--limit-train", "200", "--limit-test", "50", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    native = [line for line in done.stderr.splitlines() if line.startswith(("E0000", "W0000", "I0000"))]
    assert not native, done.stderr
    assert "test accuracy" in done.stdout
