"""Declarative model specs: one TOML file describes one image CNN.

A spec is a single parameter object (input, conv blocks, dense layers, output), each block carrying its
own settings, never parallel lists. Presets ship in ``models/`` (``mnist-cnn``, ``mnist-cnn-70``); a
user's own ``.toml`` file works the same way.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from cnnkit.errors import SpecError
from cnnkit.filekind import sniff
from cnnkit.keras.geometry import spec_layers, walk_layers


class Padding(str, Enum):
    VALID = "valid"
    SAME = "same"


class PoolKind(str, Enum):
    MAX = "max"
    AVG = "avg"


ACTIVATIONS = ("relu", "relu6", "elu", "gelu", "selu", "sigmoid", "tanh", "swish", "softmax", "linear")


@dataclass(frozen=True)
class InputSpec:
    """Image input, NHWC. Normalisation ``x * scale + offset`` is baked into the model."""

    shape: tuple[int, int, int] = (28, 28, 1)
    value_range: tuple[float, float] = (0.0, 255.0)
    scale: float = 1.0 / 255.0
    offset: float = 0.0


@dataclass(frozen=True)
class PoolSpec:
    kind: PoolKind = PoolKind.MAX
    size: int = 2
    strides: int | None = None  # None: same as size, as in Keras


@dataclass(frozen=True)
class ConvSpec:
    filters: int
    kernel: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: Padding = Padding.VALID
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    pool: PoolSpec | None = None


@dataclass(frozen=True)
class DenseSpec:
    units: int
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class OutputSpec:
    classes: int = 10
    activation: str = "softmax"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input: InputSpec = field(default_factory=InputSpec)
    conv: tuple[ConvSpec, ...] = ()
    dense: tuple[DenseSpec, ...] = ()
    output: OutputSpec = field(default_factory=OutputSpec)
    description: str = ""
    source: str = ""  # where the spec was read from; not part of the model

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return _plain(data)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


# --- loading -------------------------------------------------------------------------------------


def preset_dirs() -> list[Path]:
    """Where preset names are looked up: the package's bundled copies (wheel), then the repo's models/."""
    package = Path(__file__).resolve().parents[1]  # cnnkit/
    return [package / "presets", package.parents[1] / "models"]


def list_presets() -> list[str]:
    names = {p.stem for d in preset_dirs() if d.is_dir() for p in d.glob("*.toml")}
    return sorted(names)


def resolve_spec_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".toml" or "/" in text or path.exists():
        if path.is_dir():
            raise SpecError(f"{path} is a folder, not a spec file", hint=f"use a preset ({', '.join(list_presets())}) or a .toml path")
        if not path.is_file():
            raise SpecError(f"spec file {path} not found", hint=f"use a preset ({', '.join(list_presets())}) or a .toml path")
        return path
    for folder in preset_dirs():
        candidate = folder / f"{text}.toml"
        if candidate.is_file():
            return candidate
    raise SpecError(f"unknown spec '{text}'", hint=f"presets: {', '.join(list_presets())}; or pass a .toml file")


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """Load a preset by name (``mnist-cnn``) or a spec file by path, validated."""
    path = resolve_spec_path(name_or_path)
    hint = f"a spec is a .toml file like the presets ({', '.join(list_presets())})"
    kind = sniff(path)
    if kind not in ("a text file", None):  # a model or an archive where a spec belongs
        raise SpecError(f"{path} is {kind}, not a cnnkit spec (.toml)", hint=hint)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        what = "a spec file" if path.suffix == ".toml" else "a text file, but not a cnnkit spec"
        raise SpecError(f"{path} is {what}: not valid TOML ({exc})", hint=hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read ({exc})") from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: dict[str, Any], source: str = "<dict>") -> ModelSpec:
    """Build a :class:`ModelSpec` from plain data (a parsed TOML table or ``ModelSpec.to_dict()``)."""
    p = _Parser(source)
    p.keys(raw, {"name", "description", "input", "conv", "dense", "output"}, "top level")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{source}: 'name' must be a non-empty string")
    spec = ModelSpec(
        name=name,
        description=str(raw.get("description", "")),
        input=p.input(raw.get("input", {})),
        conv=tuple(p.conv(c, i) for i, c in enumerate(p.list_of(raw, "conv"), 1)),
        dense=tuple(p.dense(d, i) for i, d in enumerate(p.list_of(raw, "dense"), 1)),
        output=p.output(raw.get("output", {})),
        source=source,
    )
    _check_geometry(spec)
    return spec


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, what: str) -> SpecError:
        return SpecError(f"{self.source}: {where}: {what}", hint="see models/mnist-cnn.toml for the format")

    def keys(self, table: Any, allowed: set[str], where: str) -> None:
        if not isinstance(table, dict):
            raise self.fail(where, f"expected a table, got {table!r}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")

    def list_of(self, raw: dict[str, Any], key: str) -> list[Any]:
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "expected an array of tables ([[...]])")
        return value

    def posint(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(where, f"expected a positive integer, got {value!r}")
        return value

    def pair(self, value: Any, where: str) -> tuple[int, int]:
        if isinstance(value, list) and len(value) == 2:
            return (self.posint(value[0], where), self.posint(value[1], where))
        v = self.posint(value, where)
        return (v, v)

    def rate(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise self.fail(where, f"dropout must be in [0, 1), got {value!r}")
        return float(value)

    def activation(self, value: Any, where: str) -> str:
        if value not in ACTIVATIONS:
            raise self.fail(where, f"unknown activation {value!r}; known: {', '.join(ACTIVATIONS)}")
        return value

    def enum(self, cls: type[Enum], value: Any, where: str) -> Any:
        try:
            return cls(value)
        except ValueError:
            raise self.fail(where, f"{value!r} is not one of {', '.join(m.value for m in cls)}") from None

    def input(self, t: Any) -> InputSpec:
        self.keys(t, {"shape", "value_range", "scale", "offset"}, "input")
        d = InputSpec()
        shape = t.get("shape", list(d.shape))
        if not (isinstance(shape, list) and len(shape) == 3):
            raise self.fail("input.shape", f"expected [height, width, channels], got {shape!r}")
        vr = t.get("value_range", list(d.value_range))
        if not (isinstance(vr, list) and len(vr) == 2 and all(isinstance(v, int | float) for v in vr) and vr[0] < vr[1]):
            raise self.fail("input.value_range", f"expected [low, high], got {vr!r}")
        scale, offset = t.get("scale", d.scale), t.get("offset", d.offset)
        for key, v in (("scale", scale), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise self.fail(f"input.{key}", f"expected a number, got {v!r}")
        return InputSpec(
            shape=tuple(self.posint(s, "input.shape") for s in shape),  # type: ignore[arg-type]
            value_range=(float(vr[0]), float(vr[1])),
            scale=float(scale),
            offset=float(offset),
        )

    def conv(self, t: Any, i: int) -> ConvSpec:
        where = f"conv #{i}"
        self.keys(t, {"filters", "kernel", "strides", "padding", "activation", "batch_norm", "dropout", "pool"}, where)
        if "filters" not in t:
            raise self.fail(where, "missing 'filters'")
        pool = None
        if t.get("pool") is not None:
            pt = t["pool"]
            self.keys(pt, {"kind", "size", "strides"}, f"{where} pool")
            pool = PoolSpec(
                kind=self.enum(PoolKind, pt.get("kind", "max"), f"{where} pool.kind"),
                size=self.posint(pt.get("size", 2), f"{where} pool.size"),
                strides=None if pt.get("strides") is None else self.posint(pt["strides"], f"{where} pool.strides"),
            )
        return ConvSpec(
            filters=self.posint(t["filters"], f"{where} filters"),
            kernel=self.pair(t.get("kernel", 3), f"{where} kernel"),
            strides=self.pair(t.get("strides", 1), f"{where} strides"),
            padding=self.enum(Padding, t.get("padding", "valid"), f"{where} padding"),
            activation=self.activation(t.get("activation", "relu"), f"{where} activation"),
            batch_norm=bool(t.get("batch_norm", False)),
            dropout=self.rate(t.get("dropout", 0.0), f"{where} dropout"),
            pool=pool,
        )

    def dense(self, t: Any, i: int) -> DenseSpec:
        where = f"dense #{i}"
        self.keys(t, {"units", "activation", "batch_norm", "dropout"}, where)
        if "units" not in t:
            raise self.fail(where, "missing 'units'")
        return DenseSpec(
            units=self.posint(t["units"], f"{where} units"),
            activation=self.activation(t.get("activation", "relu"), f"{where} activation"),
            batch_norm=bool(t.get("batch_norm", False)),
            dropout=self.rate(t.get("dropout", 0.0), f"{where} dropout"),
        )

    def output(self, t: Any) -> OutputSpec:
        self.keys(t, {"classes", "activation"}, "output")
        classes = self.posint(t.get("classes", 10), "output.classes")
        if classes < 2:
            raise self.fail("output.classes", f"need at least 2 classes, got {classes}")
        return OutputSpec(classes=classes, activation=self.activation(t.get("activation", "softmax"), "output.activation"))


def _check_geometry(spec: ModelSpec) -> None:
    """Fail at load time, not deep inside Keras, when a block shrinks the image to nothing."""
    walk_layers(spec_layers(spec), spec.input.shape, spec_source=spec.source)
