"""The str Enums that configs and the CLI share. Kept import-light so ``cnnkit --help`` stays fast."""

from __future__ import annotations

from enum import Enum


class Optimizer(str, Enum):
    RMSPROP = "rmsprop"
    ADAM = "adam"
    SGD = "sgd"


class InputDtype(str, Enum):
    """What an exported graph takes: float32 pixels, or uint8 pixels cast inside the graph."""

    FLOAT32 = "float32"
    UINT8 = "uint8"


class GraphOptimization(str, Enum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class ExecutionMode(str, Enum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


class CudnnConvAlgoSearch(str, Enum):
    """How the CUDA provider picks cuDNN convolution algorithms (ONNX Runtime's spelling)."""

    EXHAUSTIVE = "EXHAUSTIVE"
    HEURISTIC = "HEURISTIC"
    DEFAULT = "DEFAULT"


class QuantMode(str, Enum):
    DYNAMIC = "dynamic"
    STATIC = "static"
    FP16 = "fp16"


class QuantFormat(str, Enum):
    QDQ = "qdq"
    QOPERATOR = "qoperator"


class ActivationType(str, Enum):
    UINT8 = "uint8"
    INT8 = "int8"


class CalibrationMethod(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class QuantFix(str, Enum):
    """What the accuracy-aware loop may try when a variant misses its gate, cheapest first."""

    PER_CHANNEL = "per-channel"  # per-channel weight scales (depthwise convolutions first)
    CALIBRATION = "calibration"  # another calibration method
    WIDE_ACTIVATIONS = "16-bit"  # 16-bit activations around the blamed nodes (QDQ overrides)
    FLOAT = "float"  # the blamed nodes kept in float


class ExportFormat(str, Enum):
    """What ``cnnkit export`` writes: ONNX (tf2onnx) or a .tflite for LiteRT (TFLite converter)."""

    ONNX = "onnx"
    TFLITE = "tflite"


ENGINES = ("local", "ray")  # --engine: this process, or a Ray cluster (cnnkit.distributed)


def check_engine(engine: str) -> str:
    """``engine`` if it is one of ``ENGINES``; else a one-line error."""
    if engine not in ENGINES:
        from cnnkit.errors import CnnkitError

        raise CnnkitError(f"unknown --engine {engine!r}", hint=f"one of: {', '.join(ENGINES)}")
    return engine
