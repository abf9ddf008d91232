"""The str Enums that configs and the CLI share. Kept import-light so ``cnnkit --help`` stays fast."""

from __future__ import annotations

from enum import Enum


class Optimizer(str, Enum):
    RMSPROP = "rmsprop"
    ADAM = "adam"
    SGD = "sgd"
