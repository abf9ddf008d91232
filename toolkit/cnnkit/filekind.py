"""What a file is, from its first bytes: so that a wrong file is named for what it is ("a Keras model"), not by
the parser that choked on it ("DecodeError")."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from cnnkit.errors import ModelFileError

KERAS = "a Keras model (.keras zip archive)"
ONNX = "an ONNX model"
FOLDER = "a folder"
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


def sniff(path: str | os.PathLike[str]) -> str | None:
    """``path`` in words: a folder, an empty file, a Keras model, a zip archive, an HDF5 file, a TFLite model,
    an image, a text file, an ONNX model or binary data; None if it does not exist or cannot be read."""
    p = Path(path)
    try:
        if p.is_dir():
            return FOLDER
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return KERAS if p.suffix == ".keras" or _holds_keras_config(p) else "a zip archive"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (a Keras .h5 model?)"
    if head[4:8] == b"TFL3":
        return "a TFLite model"
    if head.startswith(_IMAGE_MAGIC):
        return "an image"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a character cut by the 4 KiB read
                return "a text file"
    # ModelProto: field 1 (ir_version, a small varint) comes first in every exporter's output.
    if head[0] == 0x08 and 0 < head[1] < 64:
        return ONNX
    return "binary data"


def _holds_keras_config(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return "config.json" in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def require_file(path: str | os.PathLike[str], what: str = "model file", hint: str | None = None) -> Path:
    """``path`` if it is a file; else a one-line :class:`ModelFileError`: "``what`` PATH not found", or
    "PATH is a folder, not a ``what``" (``hint``: what to pass instead; default: the ONNX models in it)."""
    p = Path(path)
    if p.is_file():
        if not os.access(p, os.R_OK):
            raise ModelFileError(f"cannot read {what} {p}: permission denied", hint=f"check its permissions (ls -l {p})")
        return p
    if p.is_dir():
        onnx = sorted(p.glob("*.onnx"))
        default = (f"pass the model files in it, e.g. {p / '*.onnx'} ({len(onnx)} there)" if onnx
                   else "pass the file itself, not its folder")
        raise ModelFileError(f"{p} is a folder, not a {what}", hint=hint or default)
    raise ModelFileError(f"{what} {p} not found", hint="check the path (relative paths start from the current folder)")


def not_onnx_error(path: str | os.PathLike[str], detail: str) -> ModelFileError:
    """The error for a file that ONNX cannot parse: what the file is instead, and what to do with it.
    ``detail``: the parser's complaint, kept for a file that looks like a damaged model."""
    p = Path(path)
    kind = sniff(p)
    if kind == KERAS:
        return ModelFileError(f"{p} is {KERAS}, not an ONNX model", hint=f"convert it first: cnnkit export {p} -o {p.with_suffix('.onnx')}")
    if kind in (None, ONNX, "binary data"):
        return ModelFileError(f"cannot read {p} as ONNX: not a complete ONNX model ({detail})",
                              hint="is the file truncated? export or download it again")
    return ModelFileError(f"{p} is {kind}, not an ONNX model", hint="pass an .onnx model file")
