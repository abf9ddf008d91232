"""One exception root for everything a user can cause and fix.

A :class:`CnnkitError` is rendered by the CLI as one line (what went wrong, with which value, and a
hint) and exit code 1. Any other exception is a bug in cnnkit.
"""

from __future__ import annotations


class CnnkitError(Exception):
    """A user error: bad input, missing file, unmet gate. ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text


def shorten(text: object, limit: int = 300) -> str:
    """``text`` (an exception, say) on one line; longer than ``limit`` characters, it is cut at a word boundary and
    ends in "…", so that no message ends mid-word."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"


class SpecError(CnnkitError):
    """A model spec that cannot be found or does not describe a valid model."""


class DatasetError(CnnkitError):
    """A dataset that cannot be loaded, or a data file that is malformed."""


class OutputExistsError(CnnkitError):
    """An output path that exists and would be overwritten without ``--force``."""


class OutputError(CnnkitError):
    """An output that cannot be written: disk full, read-only folder, permission denied, name too long."""


class ModelFileError(CnnkitError):
    """A model file (.keras or .onnx) that is missing, unreadable or corrupt."""


class MissingDependencyError(CnnkitError):
    """An optional dependency (e.g. the training stack) that is not installed."""


class ExportError(CnnkitError):
    """A model that cannot be converted to ONNX."""


class ParityError(CnnkitError):
    """Inputs to a parity check that do not fit the models."""
