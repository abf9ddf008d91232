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
