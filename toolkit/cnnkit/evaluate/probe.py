"""Which preprocessing a model wants, judged by its own answers: run each preset (raw, unit, tf, torch, caffe) on a
few of the user's images and say which gives confident, stable predictions — and, on labelled images, which
agrees with the labels. A suggestion only: nothing is applied; the user re-runs with ``--preprocess``.

Why it works: a pretrained model fed the values it was trained on answers with a clear margin, and a pixel
moved by less than a grey level does not change its answer; fed values of another range it is pushed off its
training distribution, and its answers get flat, erratic or stuck on one class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.preprocess import PRESETS, PreprocessRecord, bind_to_model, preset, record_from_metadata
from cnnkit.errors import CnnkitError
from cnnkit.graph.info import describe_onnx
from cnnkit.runtimes.sessions import SessionConfig
from cnnkit.topk import ranking

SCHEMA = "cnnkit.probe-preprocess/1"
DEFAULT_PROBE_IMAGES = 32
# Scores closer than this share of the best are "alike": the images do not tell those presets apart.
ALIKE = 0.1
# Below this margin x stability no preset counts as confident (a margin of 1 % between the first two classes).
MIN_UNLABELLED_SCORE = 0.01


@dataclass(frozen=True)
class PresetScore:
    preset: str
    record: str  # the record in words
    mean_top1_probability: float
    mean_margin: float  # top-1 minus top-2 probability, averaged over the images
    stability: float | None  # share of images whose top-1 holds under ±½ grey-level dither (None: uint8 input)
    label_agreement: float | None  # share whose top-1 is the image's label (None: unlabelled images)
    distinct_top1: int  # how many different classes come out top-1
    score: float  # what the suggestion ranks by (see probe_preprocessing)
    note: str = ""  # why the preset is not suggested, e.g. one class for every image


@dataclass(frozen=True)
class ProbeResult:
    schema: str
    model: str
    sha256: str
    images: int
    source: str  # where the images came from
    labelled: bool
    model_record: str | None  # the model's own preprocessing record in words; None: it carries none
    output_kind: str  # probabilities, or logits (softmax applied)
    scores: tuple[PresetScore, ...]
    suggestion: str | None  # a preset name; None: the images cannot tell the presets apart
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_preprocessing(model: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]] = (),
                        data_dir: str | os.PathLike[str] | None = None, samples: int = DEFAULT_PROBE_IMAGES,
                        labels_file: str | os.PathLike[str] | None = None, session: SessionConfig | None = None,
                        seed: int = 0) -> ProbeResult:
    """Score every preset on ``images`` (files) or on ``samples`` images of ``data_dir`` (spread over its class
    folders; default 32). Per preset: mean top-1 probability and margin, top-1 stability under ±½ grey-level
    dither, and agreement with the labels where the folder has them.

    The suggestion ranks by label agreement when there are labels; else by margin x stability. A preset that
    gives one class for every image is never suggested (a saturated input does that, confidently).
    """
    from cnnkit.evaluate.predict import as_probabilities
    from cnnkit.parity.stability import dither
    from cnnkit.runtimes.registry import DEFAULT_RUNTIME, create_runner

    if samples <= 0:
        raise CnnkitError(f"--probe-images must be positive, got {samples}", hint=f"e.g. --probe-images {DEFAULT_PROBE_IMAGES}")
    info = describe_onnx(model)
    if info.input is not None and info.input.dtype in ("uint8", "int8"):
        raise CnnkitError(f"{Path(model).name} takes {info.input.dtype} pixels: its preprocessing is inside the graph, "
                          "there is nothing to choose", hint="run cnnkit predict without --probe-preprocess")
    base = bind_to_model(PRESETS["raw"], info)  # every preset fits images alike; they differ in values only
    pixels, labels, source = _probe_images(model, info, base, images, data_dir, samples, labels_file)
    runner = create_runner(DEFAULT_RUNTIME, model, session or SessionConfig())
    batch = info.input.batch if info.input is not None and info.input.batch else 32
    moved = dither(pixels, np.random.default_rng([seed, 0x5EED]))
    labelled = bool((labels >= 0).any())
    scores, kind = [], ""
    for name in PRESETS:
        record = bind_to_model(preset(name), info)
        probs, kind = as_probabilities(_run(runner, record.normalize(pixels), batch))
        if not np.isfinite(probs).all():
            scores.append(PresetScore(name, record.describe(), float("nan"), float("nan"), None, None, 0, 0.0,
                                      "non-finite outputs"))
            continue
        order = ranking(probs)
        rows = np.arange(len(probs))
        top = probs[rows, order[:, 0]]
        second = probs[rows, order[:, 1]] if probs.shape[1] > 1 else np.zeros(len(probs))
        moved_top = ranking(_run(runner, record.normalize(moved), batch))[:, 0]
        stability = float(np.mean(moved_top == order[:, 0]))
        agreement = float(np.mean(order[labels >= 0, 0] == labels[labels >= 0])) if labelled else None
        margin = float(np.mean(top - second))
        distinct = len(set(order[:, 0].tolist()))
        note = "one class for every image" if distinct == 1 and len(pixels) >= 4 else ""
        score = 0.0 if note else (agreement if labelled else margin * stability)  # type: ignore[operator]
        scores.append(PresetScore(name, record.describe(), float(np.mean(top)), margin, stability, agreement, distinct,
                                  float(score), note))
    own = record_from_metadata(info.metadata)
    suggestion, reason = _suggest(scores, labelled, own)
    return ProbeResult(SCHEMA, str(model), info.sha256, len(pixels), source, labelled,
                       own.describe() if own is not None else None, kind, tuple(scores), suggestion, reason)


def _suggest(scores: list[PresetScore], labelled: bool, own: PreprocessRecord | None) -> tuple[str | None, str]:
    ranked = sorted((s for s in scores if not s.note), key=lambda s: (-s.score, -(s.stability or 0), -s.mean_margin))
    what = "agreement with the labels" if labelled else "margin x stability"
    if not ranked or ranked[0].score <= (0 if labelled else MIN_UNLABELLED_SCORE):
        return None, f"no preset gives {'any correct answer' if labelled else 'stable, confident answers'} on these images"
    best = ranked[0]
    alike = [s.preset for s in ranked[1:] if s.score >= (1 - ALIKE) * best.score]
    if alike:
        return None, (f"{best.preset} and {', '.join(alike)} score alike ({what} within {ALIKE:.0%}): these images "
                      f"cannot tell them apart" + ("" if labelled else "; labelled images (class subfolders) would"))
    runner_up = f"; next: {ranked[1].preset}, {ranked[1].score:.2f}" if len(ranked) > 1 else ""
    reason = f"best {what}: {best.score:.2f}{runner_up}"
    if own is not None and own.name == best.preset:
        reason += "; the model's own record says so too"
    return best.preset, reason


def _probe_images(model: Any, info: Any, record: PreprocessRecord, images: Sequence[Any], data_dir: Any, samples: int,
                  labels_file: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 pixels fitted to the model, labels (-1: none) and where they came from."""
    from cnnkit.data.sources import model_class_names, open_images, read_image_files

    if images:
        fitted = read_image_files(images, record)
        return np.stack(fitted), np.full(len(fitted), -1, np.int64), f"{len(fitted)} image file(s)"
    if data_dir is None:
        raise CnnkitError("--probe-preprocess needs images to try the presets on",
                          hint="pass image files, or --data-dir DIR with a folder of the model's kind of images")
    names, names_from = model_class_names(info.metadata, labels_file)
    source = open_images(None, data_dir, "test", names, names_from, strict_names=labels_file is not None, model=model)
    pixels, labels = source.take(samples).load(record)
    if len(pixels) == 0:
        raise CnnkitError(f"no readable image in {data_dir}", hint="pass a folder of JPEG or PNG images")
    return pixels, labels if source.labelled else np.full(len(pixels), -1, np.int64), str(data_dir)


def _run(runner: Any, x: np.ndarray, batch: int) -> np.ndarray:
    """The first output for every row of ``x``, in chunks of ``batch`` (a fixed-batch model: the last padded)."""
    out = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        scores = next(iter(runner.infer({runner.input_name: chunk}).values()))
        out.append(np.asarray(scores).reshape(len(chunk), -1)[:n])
    return np.concatenate(out)
