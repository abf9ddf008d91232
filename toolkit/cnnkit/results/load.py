"""One way back from JSON: every cnnkit result schema, loaded into its typed result.

Each schema maps to the dataclass its command returns; pydantic validates the JSON against that dataclass's
fields (nested results, tuples and optional fields included), so a missing or mistyped field is a one-line error
naming the file and the field, never a ``KeyError`` later. The few nested keys that readers rely on inside
free-form records (a provider's ``active``, a dataset's ``name``) are checked here too. Unknown extra fields are
ignored, so a newer cnnkit's additions do not break an older reader. pydantic is imported only when loading.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError


class ResultError(CnnkitError):
    """A result file that cannot be read back: not JSON, not cnnkit's, another schema, or a bad field."""


TRAIN_RECORD_FILE = "train.json"  # written beside model.keras by cnnkit train
TRAIN_SCHEMA = "cnnkit.train/1"


@dataclass(frozen=True)
class TrainRecord:
    """``train.json`` (written by :func:`cnnkit.keras.train.train_model`)."""

    schema: str
    spec: dict[str, Any]
    params: int
    dataset: dict[str, Any]
    metrics: dict[str, float]
    epochs_run: int
    best_epoch: int
    wall_time_s: float
    out_dir: str = ""
    model_path: str = ""
    notice: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)


# schema -> (module:class of its typed result, what it is called in messages)
SCHEMAS: dict[str, tuple[str, str]] = {
    TRAIN_SCHEMA: ("cnnkit.results.load:TrainRecord", "training"),
    "cnnkit.parity/1": ("cnnkit.parity.check:ParityResult", "parity"),
    "cnnkit.eval/1": ("cnnkit.evaluate.accuracy:EvalResult", "eval"),
    "cnnkit.bench/1": ("cnnkit.bench.result:BenchResult", "benchmark"),
    "cnnkit.scenario/1": ("cnnkit.bench.scenarios:ScenarioResult", "LoadGen scenario"),
    "cnnkit.quantize/1": ("cnnkit.quantize.config:QuantizeResult", "quantize"),
    "cnnkit.quantize-auto/1": ("cnnkit.quantize.config:AutoResult", "quantize --auto"),
    "cnnkit.compare/1": ("cnnkit.results.compare:CompareResult", "compare"),
    "cnnkit.pipeline/1": ("cnnkit.pipeline:PipelineResult", "pipeline state"),
    "cnnkit.fleet-bench/1": ("cnnkit.distributed.fleet:FleetResult", "fleet benchmark"),
    "cnnkit.recommend/1": ("cnnkit.bench.recommend:Recommendation", "recommendation"),
    "cnnkit.predict/1": ("cnnkit.evaluate.predict:PredictResult", "predict"),
    "cnnkit.onnx-summary/1": ("cnnkit.graph.summary:OnnxSummary", "ONNX summary"),
    "cnnkit.bundle/1": ("cnnkit.verify.bundle:BundleManifest", "bundle manifest"),
    "cnnkit.verify/1": ("cnnkit.verify.check:VerifyResult", "verify"),
    "cnnkit.fleet-verify/1": ("cnnkit.distributed.fleet_verify:FleetVerifyResult", "fleet verify"),
    "cnnkit.card/1": ("cnnkit.report.card:Card", "deployment card"),
}

# Keys inside free-form dict fields that readers (compare, report) rely on: path -> type. "[]" walks a list.
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "cnnkit.train/1": {"spec.name": str, "dataset.name": str, "dataset.train_samples_used": int,
                       "dataset.validation_samples": int, "dataset.test_samples": int, "metrics.test_accuracy": (int, float)},
    "cnnkit.parity/1": {"provider.active": str, "inputs.counts": dict},
    "cnnkit.eval/1": {"dataset.name": str, "dataset.evaluated_samples": int, "models[].provider.active": str},
    "cnnkit.bench/1": {"cases[].provider.active": str},
    "cnnkit.fleet-bench/1": {"entries[].result.cases[].provider.active": str},
    "cnnkit.quantize/1": {"dataset.name": str, "dataset.evaluated_samples": int},
    "cnnkit.bundle/1": {"model.sha256": str, "model.precision": str, "input.height": int, "input.width": int,
                        "input.channels": int, "inputs.total": int, "inputs.kinds": list},
    "cnnkit.verify/1": {"provider.runtime": str, "model.sha256": str},
}


def _reject_constant(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def read_json(path: str | Path) -> Any:
    """A strict JSON document (NaN and Infinity refused); errors are one line naming ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ResultError(f"{p} is a folder, expected a JSON result file") from None
    except OSError as exc:
        raise ResultError(f"cannot read {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ResultError(f"{p} is not JSON (not UTF-8 text)", hint="pass a --json result of a cnnkit command") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ResultError(f"{p} is not JSON ({' '.join(str(exc).split())})",
                          hint="pass a --json result of a cnnkit command") from None


def schema_of(data: Any, source: str) -> str:
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith("cnnkit."):
        raise ResultError(f"{source} is not a cnnkit result (no cnnkit schema)", hint="pass a --json result of a cnnkit command")
    if schema not in SCHEMAS:
        raise ResultError(f"{source} has schema {schema!r}, which this cnnkit cannot read",
                          hint=f"known: {', '.join(SCHEMAS)}; upgrade cnnkit for newer results")
    return schema


def result_type(schema: str) -> type:
    module, name = SCHEMAS[schema][0].split(":")
    return getattr(importlib.import_module(module), name)


def from_dict(data: Any, source: str = "the result", expect: str | tuple[str, ...] | None = None) -> Any:
    """The typed result for ``data`` (a parsed cnnkit JSON result); ``expect``: the schema(s) the caller reads."""
    found = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(found, str):
        schema_of(data, source)  # raises: not a cnnkit result at all
    if expect is not None:
        wanted = (expect,) if isinstance(expect, str) else expect
        if found not in wanted:
            names = [SCHEMAS[s][1] for s in wanted]
            kinds = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
            raise ResultError(f"{source} is not a cnnkit {kinds} result (schema {found!r}, expected "
                              f"{' or '.join(repr(s) for s in wanted)})")
    schema = schema_of(data, source)
    for path, kind in _REQUIRED.get(schema, {}).items():
        _check_key(data, path.split("."), kind, source, "")
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(result_type(schema)).validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _location(err["loc"])
        what = "is missing" if err["type"] == "missing" else f"is invalid: {err['msg']}"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ResultError(f"{source}: field {where} {what}{more}",
                          hint=f"the file does not hold a complete {SCHEMAS[schema][1]} result; write it again with cnnkit") from None


def load_result(path: str | Path, expect: str | tuple[str, ...] | None = None) -> Any:
    """Read ``path`` and return its typed result (see :func:`from_dict`)."""
    return from_dict(read_json(path), str(path), expect)


def read_train_record(path: str | Path) -> TrainRecord:
    """``train.json`` at ``path``, typed; anything else is a one-line :class:`ResultError`."""
    return load_result(path, expect=TRAIN_SCHEMA)


def train_record_beside(model: str | Path) -> TrainRecord | None:
    """The ``train.json`` in a model's folder, typed: how cnnkit trained it (spec, dataset, metrics). None where
    there is none, or where the file is not a complete training record: then cnnkit did not train the model."""
    path = Path(model).parent / TRAIN_RECORD_FILE
    if not path.is_file():
        return None
    try:
        return read_train_record(path)
    except ResultError:
        return None


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _check_key(node: Any, parts: list[str], kind: type | tuple[type, ...], source: str, where: str) -> None:
    if not parts:
        if not isinstance(node, kind) or isinstance(node, bool) and kind is not bool:
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ResultError(f"{source}: field {where} is invalid: expected {names}, got {json.dumps(node)[:40]}")
        return
    key, rest = parts[0], parts[1:]
    many = key.endswith("[]")
    key = key.removesuffix("[]")
    here = f"{where}.{key}" if where else key
    if not isinstance(node, dict):
        raise ResultError(f"{source}: field {where or '(top level)'} is invalid: expected an object")
    if key not in node:
        raise ResultError(f"{source}: field {here} is missing",
                          hint="the file does not hold a complete cnnkit result; write it again with cnnkit")
    if not many:
        _check_key(node[key], rest, kind, source, here)
        return
    if not isinstance(node[key], list | tuple):
        raise ResultError(f"{source}: field {here} is invalid: expected a list")
    for i, item in enumerate(node[key]):
        _check_key(item, rest, kind, source, f"{here}[{i}]")
