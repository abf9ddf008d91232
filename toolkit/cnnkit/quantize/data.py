"""The images quantization uses: calibration images (a dataset's training split, or a seeded sample of an image
folder kept apart from the images that measure accuracy; never random data) and the held-out images that measure
accuracy, and the reader that feeds calibration images to onnxruntime's quantizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.choices import QuantMode
from cnnkit.data.datasets import Dataset, DatasetName, default_data_dir, load_dataset
from cnnkit.data.folders import SkippedImages, is_image_folder
from cnnkit.data.preprocess import PreprocessRecord, record_for_model
from cnnkit.data.sources import ImageSource, model_class_names, open_folder
from cnnkit.errors import CnnkitError
from cnnkit.graph import metadata as meta
from cnnkit.graph.info import OnnxModelInfo
from cnnkit.quantize.config import QuantizeConfig, QuantizeError


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over real images, in batches."""

    def __init__(self, input_name: str, images: np.ndarray, fixed_batch: int | None = None):
        """Equal batches of at most 32 images (the largest such divisor of their number: the histogram
        calibrators stack batches, and fail on a short last one), or of the model's ``fixed_batch`` (a short
        last one padded with its own images)."""
        self.input_name = input_name
        size = fixed_batch or max(d for d in range(1, min(32, max(len(images), 1)) + 1) if len(images) % d == 0)
        self.batches = [images[i : i + size] for i in range(0, len(images), size)]
        if fixed_batch and self.batches and len(self.batches[-1]) < fixed_batch:
            self.batches[-1] = np.resize(self.batches[-1], (fixed_batch, *self.batches[-1].shape[1:]))
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {self.input_name: self.batches[self.index - 1]}

    def __iter__(self) -> CalibrationReader:  # qdq_loss_debug iterates where the quantizer calls get_next
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def model_batch(model: Path) -> int | None:
    """The model's fixed batch (calibration batches must have it), None where the batch is dynamic."""
    from cnnkit.graph.info import image_input, load_onnx

    try:
        return image_input(load_onnx(model), str(model)).batch
    except CnnkitError:
        return None


@dataclass(frozen=True, eq=False)
class QuantData:
    """The images quantization uses, fitted by the model's preprocessing record: calibration images (model-ready,
    in memory) and the images that measure accuracy (streamed); either may be absent."""

    record: PreprocessRecord
    calibration: np.ndarray | None
    evaluation: ImageSource | None
    provenance: dict[str, Any]
    notes: tuple[str, ...] = ()
    skipped: SkippedImages | None = None

    @property
    def labelled(self) -> bool:
        return self.evaluation is not None and self.evaluation.labelled

    @property
    def metric(self) -> str:
        if self.evaluation is None:
            return "none (no images: accuracy not checked)"
        return "accuracy" if self.labelled else "top-1 agreement with FP32 (unlabelled images)"


def _model_dataset(info: OnnxModelInfo) -> str | None:
    name = meta.dataset(info.metadata)
    return name if name in {d.value for d in DatasetName} else None


def prepare_quant_data(config: QuantizeConfig, info: OnnxModelInfo, dataset: Dataset | QuantData | None = None
                       ) -> QuantData:
    """Calibration and evaluation images for ``config``: an image folder (``--data-dir``), the dataset given, or
    the one the model's metadata names — a ``--dataset`` that differs from it is an error, never a silent swap."""
    if isinstance(dataset, QuantData):
        return dataset
    record, note = record_for_model(info, config.preprocess)
    notes = [note] if note else []
    static = config.mode is QuantMode.STATIC
    model = Path(config.model).name
    where = Path(config.data_dir) if config.data_dir is not None else default_data_dir()
    if isinstance(dataset, Dataset):
        calib_src, eval_src = ImageSource.from_dataset(dataset, "train"), ImageSource.from_dataset(dataset, "test")
        how = "the dataset's training split"
        held_out: bool | None = True
    elif where is not None and is_image_folder(where):
        if config.dataset is not None:
            raise QuantizeError(f"--dataset {config.dataset} and --data-dir {where} (a folder of images) disagree",
                                hint="give one of them: an image folder needs no --dataset")
        names, names_from = model_class_names(info.metadata, config.labels_file)
        folder = ImageSource.from_folder(open_folder(where, names, names_from, config.labels_file is not None,
                                                     info.classes))
        if folder.notice:
            notes.append(folder.notice)
        n = len(folder)
        k = min(config.calibration_samples, n)
        order = np.random.default_rng(0).permutation(n)
        calib_src = folder.subset(np.sort(order[:k]))
        if not static:  # nothing is calibrated: every image measures accuracy
            eval_src, how, held_out = folder, "", None
        elif n > k:
            eval_src = folder.subset(np.sort(order[k:]))
            how = f"{k:,} images of {where} drawn with seed 0; the other {n - k:,} measure accuracy"
            held_out = True
        else:
            eval_src = folder
            how = f"all {n:,} images of {where}"
            held_out = False
            notes.append(f"{where} holds {n:,} images, not more than --calibration-samples {config.calibration_samples}: "
                         f"accuracy is measured on the calibration images themselves (none is held out)")
    else:
        trained_on = _model_dataset(info)
        if config.dataset is not None and trained_on is not None and config.dataset != trained_on:
            raise QuantizeError(
                f"{model} was trained on {trained_on} (its metadata says so), not on --dataset {config.dataset}",
                hint=f"calibrate on {trained_on} (--dataset {trained_on}), or on a folder of the model's own images (--data-dir DIR)")
        name = config.dataset or (trained_on if where is None or trained_on != DatasetName.DIGITS.value else None)
        if name is None and where is None:
            if static:
                raise QuantizeError(
                    f"static INT8 calibrates on real images, and {model} names no dataset it was trained on",
                    hint="pass --data-dir DIR with a folder of the model's images (class subfolders also check "
                         "accuracy), or --dataset; or use --mode fp16 or dynamic, which need none")
            notes.append(f"{model} names no dataset and none was given: {config.mode.value} variant built without "
                         f"an accuracy check (pass --data-dir DIR with labelled images to check it)")
            return QuantData(record, None, None, {"name": None, "calibration": None}, tuple(notes))
        ds = load_dataset(name, config.data_dir, require_train=static)
        if ds.notice:
            notes.append(ds.notice)
        calib_src, eval_src = ImageSource.from_dataset(ds, "train"), ImageSource.from_dataset(ds, "test")
        how = "the dataset's training split"
        held_out = True  # the test split
    skipped = SkippedImages() if config.skip_bad_images else None
    calib = None
    if static:
        if len(calib_src) == 0:
            raise QuantizeError(
                f"{calib_src.provenance.get('name')} from {calib_src.provenance.get('source')} has no training images "
                f"to calibrate on",
                hint="static quantization calibrates on the training split: give --data-dir with train-* files, or a "
                     "folder of images")
        pixels, _ = calib_src.head(config.calibration_samples).load(record, skipped)
        if len(pixels) == 0:
            raise QuantizeError(f"no readable calibration image in {calib_src.provenance.get('source')}")
        batch = info.input.batch if info.input is not None else None
        if batch is not None and len(pixels) >= batch:
            pixels = pixels[: len(pixels) - len(pixels) % batch]  # whole batches only: the model takes no other size
        calib = record.normalize(pixels)
    eval_src = eval_src.take(config.eval_samples)
    # held_out: no accuracy image was calibrated on, nor trained on if a split says so (None: a folder, not calibrated).
    provenance = eval_src.describe() | {"calibration": how if static else None,
                                        "calibration_samples": 0 if calib is None else int(len(calib)),
                                        "held_out": held_out}
    return QuantData(record, calib, eval_src, provenance, tuple(notes), skipped)

