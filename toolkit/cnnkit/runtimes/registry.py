"""A choice of runtime -> a runner keeping the one contract of :mod:`cnnkit.runtimes.base`.

A :class:`RuntimeChoice` names a runtime and the precision it computes in: ``onnxruntime`` (the model's own
precision), ``openvino`` (reads the same .onnx; ``openvino:bf16`` sets the precision hint to bf16, reported as
bf16, never as fp32), ``litert`` (a .tflite made from the same Keras model by ``cnnkit export --format
tflite``) and ``keras`` (a .keras file; a reference, not a ``--runtime`` choice). Nothing here imports a
runtime until a runner is built, so ``cnnkit --help`` stays fast; nothing in the package imports this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.runtimes.base import RUNTIMES, Runner

_PRECISIONS = {"onnxruntime": ("model",), "openvino": ("fp32", "bf16"), "litert": ("fp32",)}


@dataclass(frozen=True)
class RuntimeChoice:
    """A runtime and the precision it computes in (``model``: whatever the .onnx holds, for ONNX Runtime)."""

    runtime: str = "onnxruntime"
    precision: str = "model"

    @property
    def label(self) -> str:
        """The ``--runtime`` item: ``openvino:bf16``, ``litert``, ``onnxruntime``."""
        return runtime_label(self.runtime, self.precision)

    def to_dict(self) -> dict[str, str]:
        return {"runtime": self.runtime, "precision": self.precision}


DEFAULT_RUNTIME = RuntimeChoice()


def runtime_label(runtime: str, precision: str, model_precision: bool = False) -> str:
    """A runtime and the precision it ran in, named as ``--runtime`` takes it: ``runtime:precision``, or the bare
    runtime in its default precision (fp32). ONNX Runtime is bare: it runs the model's own precision, which
    ``model_precision`` (default off; for a table with no precision column) names too: ``onnxruntime:fp16``."""
    if precision in ("model", "fp32") or (runtime == "onnxruntime" and not model_precision):
        return runtime
    return f"{runtime}:{precision}"


def parse_runtimes(text: str) -> tuple[RuntimeChoice, ...]:
    """``onnxruntime,openvino:bf16,litert`` -> choices; an unknown runtime or precision is a one-line error."""
    out: list[RuntimeChoice] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name, _, precision = item.lower().partition(":")
        name = {"ort": "onnxruntime", "ov": "openvino", "tflite": "litert"}.get(name, name)
        if name not in RUNTIMES:
            raise CnnkitError(f"--runtime: unknown runtime '{item}'", hint=f"choose from {', '.join(RUNTIMES)} (comma-separated)")
        allowed = _PRECISIONS[name]
        precision = {"f32": "fp32", "bfloat16": "bf16"}.get(precision, precision) or allowed[0]
        if precision not in allowed:
            raise CnnkitError(f"--runtime: {name} has no precision '{precision}'",
                              hint=f"{name} runs {', '.join(p for p in allowed if p != 'model') or 'the model as it is'}")
        out.append(RuntimeChoice(name, precision))
    if not out:
        raise CnnkitError(f"--runtime: no runtime in '{text}'", hint=f"choose from {', '.join(RUNTIMES)}")
    return tuple(dict.fromkeys(out))


def parse_one_runtime(text: str, command: str) -> RuntimeChoice:
    """One ``--runtime`` item, for a command that runs one runtime at a time."""
    runtimes = parse_runtimes(text)
    if len(runtimes) != 1:
        raise CnnkitError(f"{command} runs one runtime at a time, got --runtime {text}",
                          hint=f"run {command} once per runtime, or compare them with cnnkit bench --recommend")
    return runtimes[0]


def tflite_path(onnx_path: str | os.PathLike[str], given: str | os.PathLike[str] | None = None) -> Path:
    """The .tflite LiteRT runs for ``onnx_path``: ``given``, else the file beside it with the .tflite suffix."""
    path = Path(given) if given is not None else Path(onnx_path).with_suffix(".tflite")
    if not path.is_file():
        raise CnnkitError(
            f"LiteRT needs a .tflite model: {path} not found",
            hint="make it from the Keras model: cnnkit export MODEL.keras --format tflite -o "
                 f"{path.name}, or pass --tflite PATH",
        )
    return path


def create_runner(choice: RuntimeChoice, model: str | os.PathLike[str] | bytes, session: Any = None,
                  tflite: str | os.PathLike[str] | None = None, batch_size: int | None = None,
                  label: str | None = None, names: tuple[str, tuple[str, ...]] | None = None,
                  throughput: bool = False) -> Runner:
    """A runner for ``model`` on ``choice``.

    ``model``: an .onnx (ONNX Runtime also takes its bytes), or for ``keras`` a .keras file; ``session``: the
    :class:`SessionConfig` (its provider for ONNX Runtime, its ``intra_op_threads`` for all; default: CPU);
    ``tflite``: LiteRT's model (default: the .tflite beside the .onnx); ``batch_size``: compile for that batch
    only where a runtime prefers static shapes (OpenVINO), else any batch runs; ``names``: (input, outputs)
    a Keras model answers to (default: ``images`` and ``probabilities``); ``throughput``: serve many requests
    at once where the runtime has its own way to (OpenVINO: streams and one infer request each); default off.
    """
    from cnnkit.runtimes.sessions import SessionConfig

    session = session or SessionConfig()
    if choice.runtime == "onnxruntime":
        from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model, session, label=label)
    if isinstance(model, bytes):
        raise ValueError(f"{choice.runtime} runs model files, not a model held in memory")
    if choice.runtime == "openvino":
        from cnnkit.runtimes.openvino import OpenVinoRunner

        return OpenVinoRunner(model, choice.precision, threads=session.intra_op_threads, batch_size=batch_size,
                              label=label, throughput=throughput)
    if choice.runtime == "litert":
        from cnnkit.runtimes.litert import LiteRtRunner

        return LiteRtRunner(tflite_path(model, tflite), onnx_model=model, threads=session.intra_op_threads,
                            label=label)
    if choice.runtime == "keras":
        from cnnkit.runtimes.keras import KerasRunner

        named = {"input_name": names[0], "output_names": names[1]} if names is not None else {}
        return KerasRunner.from_file(model, **named, **({"label": label} if label else {}))
    raise ValueError(f"unknown runtime {choice.runtime!r}")  # parse_runtimes admits none
