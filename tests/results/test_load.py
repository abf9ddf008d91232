"""Every result a command writes is strict JSON and reads back, through cnnkit.results.load, into its typed result."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.results.load import SCHEMAS, load_result, result_type
from tests.cli.test_cli_foundation import assert_user_error, run
from tests.foundation.test_finite import classifier, dataset_npz


def _strict(path: Path) -> dict:
    def reject(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_every_schema_has_a_typed_result() -> None:
    for schema in SCHEMAS:
        assert result_type(schema).__dataclass_fields__  # a dataclass the loader validates against


def test_command_results_are_strict_json_and_read_back(tmp_path: Path) -> None:
    model = classifier(tmp_path / "model.onnx")
    npz = dataset_npz(tmp_path / "mnist.npz")
    data = ("--dataset", "mnist", "--data-dir", npz)
    commands = {
        "bench": ("bench", model, "--batch-sizes", "1,3", "--min-time", "0", "--min-iterations", "5"),
        "eval": ("eval", model, *data),
        "parity": ("parity", model, model, *data),
        "quantize": ("quantize", model, "-o", tmp_path / "q.onnx", "--mode", "dynamic", "--max-accuracy-drop", "100", *data),
    }
    for name, args in commands.items():
        result = run(*args, "--json", tmp_path / f"{name}.json")
        assert result.exit_code == 0, (name, result.output)
    assert run("compare", tmp_path / "bench.json", tmp_path / "bench.json", "--json", tmp_path / "compare.json").exit_code == 0
    for name in (*commands, "compare"):
        path = tmp_path / f"{name}.json"
        raw = _strict(path)
        typed = load_result(path)
        assert typed.schema == raw["schema"]
        again = typed.to_dict() if hasattr(typed, "to_dict") else asdict(typed)
        assert json.loads(json.dumps(again)) == raw, name  # the typed result round-trips
    assert run("report", *(tmp_path / f"{n}.json" for n in commands), "-o", tmp_path / "report").exit_code == 0


def test_expected_schema_and_unreadable_files(tmp_path: Path) -> None:
    from cnnkit.bench.result import BenchResult

    f = tmp_path / "e.json"
    f.write_text(json.dumps({"schema": "cnnkit.eval/1"}))
    with pytest.raises(CnnkitError, match=r"is not a cnnkit benchmark result \(schema 'cnnkit.eval/1'"):
        BenchResult.load(f)
    with pytest.raises(CnnkitError, match="is a folder"):
        load_result(tmp_path)
    with pytest.raises(CnnkitError, match="cannot read"):
        load_result(tmp_path / "missing.json")
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CnnkitError, match="not JSON"):
        load_result(f)


def test_report_names_file_and_field_of_an_incomplete_train_record(tmp_path: Path) -> None:
    f = tmp_path / "train.json"
    f.write_text(json.dumps({"schema": "cnnkit.train/1", "spec": {"name": "s"}, "params": 1,
                             "dataset": {"name": "digits", "train_samples_used": 1, "validation_samples": 1},
                             "metrics": {"test_accuracy": 0.5}, "epochs_run": 1, "best_epoch": 1, "wall_time_s": 1.0}))
    assert_user_error(run("report", f, "-o", tmp_path / "r"), f"{f}: field dataset.test_samples is missing")


def test_train_record_beside_a_model_is_read_typed_or_not_at_all(tmp_path: Path) -> None:
    from cnnkit.data.datasets import model_dataset
    from cnnkit.results.load import TrainRecord, train_record_beside

    model = tmp_path / "model.keras"
    assert train_record_beside(model) is None and model_dataset(model) is None  # no train.json: not cnnkit's
    record = {"schema": "cnnkit.train/1", "spec": {"name": "s", "input": {"value_range": [0, 1]}}, "params": 1,
              "dataset": {"name": "digits", "train_samples_used": 1, "validation_samples": 1, "test_samples": 1},
              "metrics": {"test_accuracy": 0.5}, "epochs_run": 1, "best_epoch": 1, "wall_time_s": 1.0}
    (tmp_path / "train.json").write_text(json.dumps(record))
    found = train_record_beside(model)
    assert isinstance(found, TrainRecord) and found.spec["name"] == "s" and found.dataset["name"] == "digits"
    assert model_dataset(model) == "digits"
    # Not a complete training record (another tool's train.json): the model says nothing.
    (tmp_path / "train.json").write_text(json.dumps({"dataset": {"name": "digits"}}))
    assert train_record_beside(model) is None and model_dataset(model) is None
