"""The ONNX metadata (``metadata_props``) cnnkit writes and reads: every key named once, and the one description
of the model's input.

Written by ``cnnkit export`` (provenance, the input, the conversion), ``export --make-batch-dynamic`` and
``cnnkit quantize`` (what they did to the model); read wherever a model is described, fed or labelled. Every
key written by an earlier cnnkit is still written and read, so models exported before read as they did.

The input is described by five keys, one :class:`InputDescription`: the layout and dtype the model takes, the
value range its spec trained on, the Keras model's own preprocessing layers (``preprocessing``), and how to feed
it (``preprocess``: a :class:`cnnkit.data.preprocess.PreprocessRecord` as JSON, parsed by that module).

Layers whose work export's graph simplification moved into another node are listed in ``folded_layers`` (a
JSON list of Keras layer names). Models exported before that key carry the same fact only in prose
(``graph_simplification``: "input scale folded into ...") beside their ``preprocessing``; :func:`folded_layers`
reads both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Provenance (export).
CNNKIT_VERSION = "cnnkit_version"  # present in every model cnnkit exported
SOURCE_MODEL = "source_model"
SOURCE_SHA256 = "source_sha256"
SPEC = "spec"
DATASET = "dataset"  # the dataset the model was trained on ("unknown" where train.json did not say)
CLASS_NAMES = "class_names"  # JSON list, in output order
# The input (export): see InputDescription.
INPUT_LAYOUT = "input_layout"
INPUT_DTYPE = "input_dtype"
INPUT_VALUE_RANGE = "input_value_range"  # JSON [low, high]
PREPROCESSING_LAYERS = "preprocessing"  # JSON list of the Keras model's Rescaling/Normalization steps
PREPROCESS = "preprocess"  # JSON preprocessing record: how to feed the model
# The conversion (export).
CONVERSION_ROUTE = "conversion_route"
CONVERSION_CHECK = "conversion_check"  # JSON: the route's check against Keras
CONVERSION_ROUTES_FAILED = "conversion_routes_failed"  # JSON list, only where a route failed
GRAPH_SIMPLIFICATION = "graph_simplification"  # what simplification did, in words; "off"
FOLDED_LAYERS = "folded_layers"  # JSON list of Keras layers whose work another node does now
OPSET = "opset"
VERSIONED_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx")  # each under version_key(package)
# Rewrites of a model.
BATCH_MADE_DYNAMIC = "batch_made_dynamic"  # export --make-batch-dynamic
QUANTIZED_FROM = "quantized_from"
QUANTIZED_FROM_SHA256 = "quantized_from_sha256"
QUANTIZATION = "quantization"  # JSON: the settings and the excluded nodes
QUANTIZED_BY = "quantized_by"
GATE = "cnnkit_gate"  # "passed" | "failed"
GATE_FAILURES = "cnnkit_gate_failures"  # JSON list, only where the gate failed

SCALE_FOLDED = "input scale folded"  # GRAPH_SIMPLIFICATION's words for it (all that older exports say)


def version_key(package: str) -> str:
    """The key of the version of ``package`` that made the model: ``tf2onnx_version``."""
    return f"{package}_version"


def read(model: Any) -> dict[str, str]:
    """An ``onnx.ModelProto``'s metadata as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def write(model: Any, values: Mapping[str, str]) -> None:
    """Set ``values`` in ``model``'s metadata, keeping its other keys (in place)."""
    import onnx

    onnx.helper.set_model_props(model, {**read(model), **values})


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class InputDescription:
    """What a model's metadata says about its input; ``None`` (or empty) for what it does not say.

    ``preprocess`` is the preprocessing record's JSON text, as written; :mod:`cnnkit.data.preprocess` parses it
    (and says when it is invalid).
    """

    layout: str | None = None  # NHWC | NCHW
    dtype: str | None = None  # float32, uint8, ...
    value_range: tuple[float, float] | None = None  # the values the spec trained on, e.g. (0, 255)
    preprocessing_layers: tuple[dict[str, Any], ...] = ()  # the Keras model's own Rescaling/Normalization steps
    preprocess: str | None = None  # the preprocessing record (JSON)

    def to_metadata(self) -> dict[str, str]:
        """The keys export writes, in its order (keys with nothing to say left out)."""
        out: dict[str, str] = {}
        if self.layout is not None:
            out[INPUT_LAYOUT] = self.layout
        if self.dtype is not None:
            out[INPUT_DTYPE] = self.dtype
        if self.value_range is not None:
            out[INPUT_VALUE_RANGE] = json.dumps(list(self.value_range))
        out[PREPROCESSING_LAYERS] = json.dumps(list(self.preprocessing_layers))
        if self.preprocess is not None:
            out[PREPROCESS] = self.preprocess
        return out

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> InputDescription:
        """Read the input keys; a value that is malformed (not JSON, the wrong shape) reads as unsaid."""
        layout = metadata.get(INPUT_LAYOUT)
        value_range = _json(metadata.get(INPUT_VALUE_RANGE))
        if not (isinstance(value_range, list) and len(value_range) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value_range)):
            value_range = None
        steps = _json(metadata.get(PREPROCESSING_LAYERS))
        steps = tuple(s for s in steps if isinstance(s, dict)) if isinstance(steps, list) else ()
        return cls(layout=layout if layout in ("NHWC", "NCHW") else None, dtype=metadata.get(INPUT_DTYPE) or None,
                   value_range=tuple(value_range) if value_range is not None else None,
                   preprocessing_layers=steps, preprocess=metadata.get(PREPROCESS) or None)


def exported_by_cnnkit(metadata: Mapping[str, str]) -> bool:
    return CNNKIT_VERSION in metadata


def class_names(metadata: Mapping[str, str]) -> tuple[str, ...] | None:
    """The class names in output order, or None where the metadata holds no list of names."""
    names = _json(metadata.get(CLASS_NAMES))
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def dataset(metadata: Mapping[str, str]) -> str | None:
    """The dataset the model was trained on, as written (may be ``unknown``); None where it is not said."""
    return metadata.get(DATASET)


def folded_layers(metadata: Mapping[str, str]) -> frozenset[str]:
    """Keras layers whose work export folded into another node: ``folded_layers``, else (older exports) the
    Rescaling steps of ``preprocessing`` where ``graph_simplification`` says the input scale was folded."""
    listed = _json(metadata.get(FOLDED_LAYERS))
    if isinstance(listed, list):
        return frozenset(n for n in listed if isinstance(n, str))
    if SCALE_FOLDED not in metadata.get(GRAPH_SIMPLIFICATION, ""):
        return frozenset()
    return rescale_layers(InputDescription.from_metadata(metadata).preprocessing_layers)


def rescale_layers(steps: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> frozenset[str]:
    """The layers of the ``rescale`` steps among a model's preprocessing layers."""
    return frozenset(s["layer"] for s in steps if s.get("op") == "rescale" and isinstance(s.get("layer"), str))
