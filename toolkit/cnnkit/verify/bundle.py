"""A golden bundle: one file that carries what a device needs to prove it computes what was validated.

``model.cnnkit`` is a zip: ``manifest.json`` (schema ``cnnkit.bundle/1``) and, each listed in it with its
SHA-256 and size,

- ``model.onnx`` (and ``model.tflite`` where one was made): the model as deployed;
- ``golden/pixels.npy``: the source pixels, uint8 ``(N, H, W, C)`` at the model's size: real images from the data
  (seeded) plus the edge cases parity uses (random, all 0, all 255, noisy);
- ``golden/inputs.npy``: the same images through the model's preprocessing record, as the model takes them;
- ``golden/labels.npy``: the labels (-1 where there is none);
- ``golden/output-<i>.npy``: the reference's outputs (the Keras model, or an FP32 ONNX model on ONNX Runtime's CPU
  provider), one file per model output;
- ``golden/stable-<i>.npy``: per input, whether the reference keeps its top-1 when the pixels move by up to
  half a grey level (parity's reference stability);

and the manifest holds the input contract, the preprocessing record, the gates (the same-model one and the
variant one), the reference's identity and the fingerprint of the machine and libraries that made it.

Reading one (:func:`open_bundle`) checks the zip's listing against the manifest and every file against its hash
before anything is used, refuses a newer schema, and never extracts by a name from the zip: the models are
written under fixed names into a fresh temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, ModelFileError, shorten
from cnnkit.parity.tolerance import Tolerance

log = logging.getLogger(__name__)

SCHEMA = "cnnkit.bundle/1"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_ONNX, MODEL_TFLITE = "model.onnx", "model.tflite"
PIXELS, INPUTS, LABELS = "golden/pixels.npy", "golden/inputs.npy", "golden/labels.npy"
DEFAULT_SAMPLES = 64
MAX_MEMBER_BYTES = 4 << 30  # a member larger than this is not a bundle cnnkit wrote (a zip bomb, or damage)
_MEMBER_NAME = re.compile(r"^(model\.onnx|model\.tflite|golden/(pixels|inputs|labels|output-\d+|stable-\d+)\.npy)$")


class BundleError(CnnkitError):
    """A bundle that cannot be used: not a zip, truncated, edited (a hash that does not match), or newer."""


def output_file(i: int) -> str:
    return f"golden/output-{i}.npy"


def stable_file(i: int) -> str:
    return f"golden/stable-{i}.npy"


@dataclass(frozen=True)
class BundleFile:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class BundleManifest:
    """``manifest.json``: what the bundle holds and the gates a device must meet."""

    schema: str
    created: str  # UTC, ISO 8601
    model: dict[str, Any]  # name, sha256, bytes, precision, tflite (sha256 or None)
    input: dict[str, Any]  # the model's image input (ImageInput.to_dict): the contract a verified model must meet
    preprocess: dict[str, Any]  # the record bound to the model (PreprocessRecord.to_dict)
    reference: dict[str, Any]  # kind (keras | onnx), name, sha256, where it ran
    inputs: dict[str, Any]  # total, counts, kinds (per input), seed, dataset, labelled
    output_names: tuple[str, ...]
    gate: Tolerance  # the same-model gate (the bundled model, or another float32 artifact of it)
    variant_gate: Tolerance  # the gate for a reduced-precision variant (INT8, FP16)
    batch_sizes: tuple[int, ...]
    build_check: dict[str, Any]  # the bundled model against the reference on the build machine
    files: dict[str, BundleFile]
    environment: dict[str, Any] = field(default_factory=dict)  # the machine and libraries that made it
    content_sha256: str = ""  # SHA-256 of this manifest without this field (an edit shows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def has_tflite(self) -> bool:
        return MODEL_TFLITE in self.files


def manifest_digest(data: dict[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON, ``content_sha256`` left out."""
    body = {k: v for k, v in data.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- building --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleConfig:
    """Bundle ``model`` (.onnx) with golden data. Defaults: 64 dataset images (plus parity's 28 random and edge-case
    inputs), seed 0, the reference = the model itself on ONNX Runtime's CPU provider, the .tflite beside the model
    if there is one, parity's batch sizes and tolerances."""

    model: Path
    output: Path
    reference: Path | None = None  # .keras or an FP32 .onnx; None: the model itself, on the CPU provider
    tflite: Path | None = None  # None: the .tflite beside the model, if any
    dataset: str | None = None
    data_dir: Path | None = None
    labels_file: Path | None = None
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    preprocess: Any = None  # PreprocessChoice | None: the model's own record
    batch_sizes: tuple[int, ...] | None = None  # None: parity's (1, 7, 64)
    atol: float | None = None
    rtol: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None
    force: bool = False

    def __post_init__(self) -> None:
        from cnnkit.finite import require_finite

        if self.samples <= 0:
            raise CnnkitError(f"--samples must be positive, got {self.samples}",
                              hint=f"dataset images to bundle, e.g. --samples {DEFAULT_SAMPLES} (the default)")
        for name in ("atol", "rtol", "min_agreement", "max_accuracy_drop"):
            require_finite(f"--{name.replace('_', '-')}", getattr(self, name))


@dataclass(frozen=True)
class BundleResult:
    path: str
    bytes: int
    sha256: str
    manifest: BundleManifest


def build_bundle(config: BundleConfig) -> BundleResult:
    """Run the reference on the golden inputs, check the model against it here, and write the bundle atomically."""
    from cnnkit.envinfo import environment
    from cnnkit.graph.info import describe_onnx
    from cnnkit.io import atomic_path, check_not_input, check_writable, sha256_file
    from cnnkit.parity.check import DEFAULT_BATCH_SIZES, open_model_images
    from cnnkit.parity.compare import compare_outputs
    from cnnkit.parity.inputs import make_inputs
    from cnnkit.parity.stability import constant_outputs_failure, reference_stability
    from cnnkit.parity.tolerance import gate_for_precision, same_model_tolerance, variant_tolerance, widen_for_rounding
    from cnnkit.data.preprocess import record_for_model, resolve_record
    from cnnkit.data.sources import ImageSource
    from cnnkit.filekind import ONNX, require_file, sniff
    from cnnkit.parity.rounding import rounding_floor
    from cnnkit.parity.check import KERAS
    from cnnkit.runtimes.base import run_batched
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner
    from cnnkit.runtimes.sessions import SessionConfig

    model = Path(config.model)
    require_file(model)
    if sniff(model) != ONNX:
        raise ModelFileError(f"{model} is {sniff(model)}; cnnkit bundle takes the .onnx model as deployed",
                             hint="export it first: cnnkit export MODEL.keras -o model.onnx")
    out = Path(config.output)
    check_writable(out, config.force)
    check_not_input(out, model)
    tflite = Path(config.tflite) if config.tflite is not None else model.with_suffix(".tflite")
    if config.tflite is not None:
        require_file(tflite)
    elif not tflite.is_file():
        tflite = None

    info = describe_onnx(model)
    record, note = record_for_model(info, config.preprocess)
    if note:
        log.info(note)
    cpu = SessionConfig()
    candidate = create_runner(DEFAULT_RUNTIME, model, cpu)
    if config.dataset == "none":  # no real images: the synthetic inputs only (accuracy is not gated)
        if config.data_dir is not None:
            raise BundleError("--dataset none and --data-dir disagree", hint="give one of them")
        inputs = make_inputs(None, record, config.samples, config.seed, False)
    else:
        source, labelled = open_model_images(config.dataset, config.data_dir, config.labels_file, info)
        source = source if isinstance(source, ImageSource) else ImageSource.from_dataset(source)
        inputs = make_inputs(source, record, config.samples, config.seed, labelled and source.labelled)
    x = inputs.feed(record)

    given = (config.atol, config.rtol, config.min_agreement, config.max_accuracy_drop)
    if config.reference is None:
        reference: Any = candidate
        ref_record, ref_desc = record, {"kind": "onnx", "name": model.name, "sha256": sha256_file(model),
                                        "runs_on": "onnxruntime CPUExecutionProvider", "same_as_model": True}
    else:
        ref_path = Path(config.reference)
        require_file(ref_path)
        if ref_path.suffix == ".keras":
            reference = create_runner(KERAS, ref_path, names=(candidate.input_name, candidate.output_names))
            h, w, c = info.input.hwc
            ref_record = resolve_record(config.preprocess, info.metadata)[0].bind(h, w, c, "NHWC", "float32")
            runs_on = "keras"
        elif sniff(ref_path) == ONNX:
            reference = create_runner(DEFAULT_RUNTIME, ref_path, cpu)
            ref_info = describe_onnx(ref_path)
            if ref_info.input.hwc != info.input.hwc:
                raise BundleError(f"the reference {ref_path} takes {_hwc(ref_info.input.hwc)} images, the model "
                                  f"{_hwc(info.input.hwc)}: not the same model",
                                  hint="pass the model's own .keras or FP32 .onnx as --reference")
            ref_record = record_for_model(ref_info, config.preprocess)[0]
            runs_on = "onnxruntime CPUExecutionProvider"
        else:
            raise ModelFileError(f"--reference {ref_path} is {sniff(ref_path)}; the reference is a .keras model or "
                                 f"an FP32 .onnx model")
        ref_desc = {"kind": "keras" if runs_on == "keras" else "onnx", "name": ref_path.name,
                    "sha256": sha256_file(ref_path), "runs_on": runs_on, "same_as_model": False}
    log.info("running the reference on %d golden inputs", len(inputs))
    ref_out = {k: np.asarray(v) for k, v in run_batched(reference, inputs.feed(ref_record), 64).items()}
    if list(ref_out) != list(candidate.output_names):  # a Keras reference names its outputs after the graph's
        ref_out = dict(zip(candidate.output_names, ref_out.values(), strict=False))

    gate = same_model_tolerance(*given)
    if info.precision == "fp32":
        floor, _ = rounding_floor(model, x, cpu)
        if config.atol is None:
            gate = widen_for_rounding(gate, floor)
    else:  # the bundled model is itself a variant of the reference: it is gated as one
        floor = None
        gate = gate_for_precision(variant_tolerance(*given), info.precision)
    variant = variant_tolerance(None, None, config.min_agreement, config.max_accuracy_drop)
    constant = constant_outputs_failure(ref_out, gate, len(inputs))
    if constant:
        raise BundleError(f"golden outputs from {ref_desc['name']} cannot tell models apart: {constant}")
    stability = reference_stability(reference, inputs, ref_record, ref_out, config.seed)
    cand_out = run_batched(candidate, x, 64)
    check = compare_outputs(ref_out, cand_out, gate, 64, inputs, stability)
    failures = [f for d in check for f in d.failures]
    if failures:
        raise BundleError(f"{model} fails its own gate against the reference on this machine: {failures[0]}",
                          hint=f"check it first: cnnkit parity {ref_desc['name']} {model.name}")

    members: dict[str, bytes] = {MODEL_ONNX: model.read_bytes()}
    if tflite is not None:
        members[MODEL_TFLITE] = tflite.read_bytes()
    members[PIXELS] = npy_bytes(inputs.pixels)
    members[INPUTS] = npy_bytes(x)
    members[LABELS] = npy_bytes(inputs.labels)
    for i, name in enumerate(ref_out):
        members[output_file(i)] = npy_bytes(ref_out[name])
        if stability is not None and name in stability:
            members[stable_file(i)] = npy_bytes(stability[name])
    batch_sizes = tuple(config.batch_sizes or DEFAULT_BATCH_SIZES)
    if info.input.batch is not None:
        batch_sizes = (info.input.batch,)
    manifest = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": model.name, "sha256": sha256_bytes(members[MODEL_ONNX]), "bytes": len(members[MODEL_ONNX]),
                  "precision": info.precision, "opset": info.opset,
                  "tflite": None if tflite is None else {"name": tflite.name, "sha256": sha256_bytes(members[MODEL_TFLITE])}},
        "input": info.input.to_dict(),
        "preprocess": record.to_dict(),
        "reference": ref_desc,
        "inputs": {"total": len(inputs), "counts": inputs.counts(), "kinds": list(inputs.kinds), "seed": config.seed,
                   "dataset": inputs.dataset, "labelled": int((inputs.labels >= 0).sum())},
        "output_names": list(ref_out),
        "gate": asdict(gate),
        "variant_gate": asdict(variant),
        "batch_sizes": list(batch_sizes),
        "build_check": {"runtime": "onnxruntime", "provider": candidate.info.to_dict(), "rounding_floor": floor,
                        "outputs": [{"output": d.output, "max_abs": d.max_abs, "top1_agreement": d.top1_agreement,
                                     "reference_top1_stability": d.reference_top1_stability,
                                     "reference_accuracy": d.reference_accuracy, "candidate_accuracy": d.candidate_accuracy}
                                    for d in check]},
        "files": {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in members.items()},
        "environment": environment(),
    }
    manifest["content_sha256"] = manifest_digest(manifest)
    with atomic_path(out, force=config.force) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, allow_nan=False) + "\n")
            for name, data in members.items():
                zf.writestr(name, data)
    from cnnkit.results.load import from_dict

    typed = from_dict(manifest, str(out), expect=SCHEMA)
    return BundleResult(path=str(out), bytes=out.stat().st_size, sha256=sha256_file(out), manifest=typed)


def _hwc(hwc: tuple[int, int, int]) -> str:
    return "x".join(map(str, hwc))


# --- reading ---------------------------------------------------------------------------------------


@dataclass
class Bundle:
    """An opened, checked bundle: its manifest, the golden arrays, and its models in a temporary folder."""

    path: Path
    sha256: str
    manifest: BundleManifest
    pixels: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    outputs: dict[str, np.ndarray]
    stability: dict[str, np.ndarray] | None
    model_path: Path
    tflite_path: Path | None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.manifest.inputs["kinds"])


@contextlib.contextmanager
def open_bundle(path: str | Path) -> Iterator[Bundle]:
    """Open ``path``, check every hash, and yield the :class:`Bundle`; its temporary folder goes when the block ends."""
    from cnnkit.results.load import from_dict

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle" if not path.exists() else f"{path} is not a file",
                          hint="make one with cnnkit bundle MODEL.onnx --data-dir DIR -o model.cnnkit")
    raw = path.read_bytes()
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise BundleError(f"{path} is not a complete cnnkit bundle (not a readable zip: truncated or not a bundle)",
                          hint="copy the bundle again; cnnkit bundle writes it") from None
    with zf:
        names = zf.namelist()
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise BundleError(f"{path} holds {', '.join(twice)} more than once: edited (which copy is meant?)")
        if MANIFEST not in names:
            raise BundleError(f"{path} is a zip without {MANIFEST}: not a cnnkit bundle")
        for name in names:
            if name != MANIFEST and not _MEMBER_NAME.match(name):
                raise BundleError(f"{path} holds {name!r}, which no cnnkit bundle holds (edited, or not a bundle)")
        members = {}
        for info in zf.infolist():
            if info.file_size > MAX_MEMBER_BYTES:
                raise BundleError(f"{path}: {info.filename} unpacks to {info.file_size} bytes, more than any bundle holds")
            try:
                members[info.filename] = zf.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # CRC mismatch, truncated data
                raise BundleError(f"{path}: {info.filename} cannot be read ({shorten(exc, 120)}): truncated or edited",
                                  hint="copy the bundle again") from None
    try:
        data = json.loads(members[MANIFEST].decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{path}: {MANIFEST} is not JSON ({shorten(exc, 120)}): edited or damaged") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    version = _schema_version(schema)
    if version is None:
        raise BundleError(f"{path}: {MANIFEST} has schema {schema!r}, not a cnnkit bundle")
    if version > SCHEMA_VERSION:
        raise BundleError(f"{path} is a version {version} bundle ({schema}); this cnnkit reads version "
                          f"{SCHEMA_VERSION}", hint="upgrade cnnkit on this device: pip install -U cnnkit")
    if data.get("content_sha256") != manifest_digest(data):
        raise BundleError(f"{path}: {MANIFEST} does not match its own hash (content_sha256): edited after it was made",
                          hint="make the bundle again with cnnkit bundle")
    manifest: BundleManifest = from_dict(data, f"{path} ({MANIFEST})", expect=SCHEMA)
    listed, present = set(manifest.files), set(members) - {MANIFEST}
    if listed - present:
        raise BundleError(f"{path} lacks {', '.join(sorted(listed - present))}, which its manifest lists: truncated or edited")
    if present - listed:
        raise BundleError(f"{path} holds {', '.join(sorted(present - listed))}, which its manifest does not list: edited")
    for name, expected in manifest.files.items():
        if sha256_bytes(members[name]) != expected.sha256 or len(members[name]) != expected.bytes:
            raise BundleError(f"{path}: {name} does not match its SHA-256 in the manifest: edited or damaged",
                              hint="copy the bundle again, or make it again with cnnkit bundle")
    if MODEL_ONNX not in members:
        raise BundleError(f"{path} holds no {MODEL_ONNX}")
    arrays = {name: _npy(path, name, members[name]) for name in members if name.endswith(".npy")}
    outputs = {}
    stability: dict[str, np.ndarray] = {}
    for i, name in enumerate(manifest.output_names):
        if output_file(i) not in arrays:
            raise BundleError(f"{path} lacks {output_file(i)}, the golden output {name}")
        outputs[name] = arrays[output_file(i)]
        if stable_file(i) in arrays:
            stability[name] = arrays[stable_file(i)].astype(bool)
    n = manifest.inputs["total"]
    for name in (PIXELS, INPUTS, LABELS):
        if name not in arrays:
            raise BundleError(f"{path} lacks {name}")
    if any(len(a) != n for a in (arrays[PIXELS], arrays[INPUTS], arrays[LABELS], *outputs.values())) \
            or len(manifest.inputs["kinds"]) != n:
        raise BundleError(f"{path}: the golden arrays do not all hold {n} inputs, as the manifest says")
    with tempfile.TemporaryDirectory(prefix="cnnkit-bundle-") as tmp:
        folder = Path(tmp)
        model_path = folder / MODEL_ONNX  # fixed names in a fresh folder: nothing is extracted by the zip's names
        model_path.write_bytes(members[MODEL_ONNX])
        tflite_path = None
        if MODEL_TFLITE in members:
            tflite_path = folder / MODEL_TFLITE
            tflite_path.write_bytes(members[MODEL_TFLITE])
        yield Bundle(path=path, sha256=sha256_bytes(raw), manifest=manifest, pixels=arrays[PIXELS],
                     inputs=arrays[INPUTS], labels=arrays[LABELS].astype(np.int64), outputs=outputs,
                     stability=stability or None, model_path=model_path, tflite_path=tflite_path)


def _no_constant(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _schema_version(schema: Any) -> int | None:
    match = re.fullmatch(r"cnnkit\.bundle/(\d+)", schema) if isinstance(schema, str) else None
    return int(match.group(1)) if match else None


def _npy(path: Path, name: str, data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(f"{path}: {name} is not a NumPy array ({shorten(exc, 120)})") from None
