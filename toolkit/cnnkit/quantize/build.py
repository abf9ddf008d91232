"""One variant built: onnxruntime's quantizer (``quant_pre_process``, ``quantize_static``, ``quantize_dynamic``)
or its float16 converter, kept quiet."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.choices import ActivationType, CalibrationMethod, QuantFormat, QuantMode
from cnnkit.errors import shorten
from cnnkit.quantize.config import QuantizeConfig, QuantizeError
from cnnkit.quantize.data import CalibrationReader, model_batch


def _ort_quant() -> Any:
    from cnnkit._deps import require_onnxruntime

    require_onnxruntime()
    import onnxruntime.quantization as q

    return q


def preprocess(model: Path, out: Path) -> Path:
    """``quant_pre_process``: symbolic shape inference and graph optimisation before quantization."""
    _ort_quant()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with quiet():
            quant_pre_process(str(model), str(out), skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001
        raise QuantizeError(f"{model}: quantization pre-processing failed: {shorten(exc, 200)}") from None
    return out


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime's quantizer logs warnings and prints tensor protos; keep them out of the user's terminal."""
    from cnnkit._deps import capture_native_stderr

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with capture_native_stderr(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def build_variant(source: Path, out: Path, config: QuantizeConfig, calib: np.ndarray | None, input_name: str,
                  excluded: list[str], per_channel_weights: tuple[str, ...] = (),
                  activations_16bit: tuple[str, ...] = ()) -> None:
    """Write one variant of ``source`` (already pre-processed for INT8) to ``out``. Static QDQ only:
    ``per_channel_weights`` are quantized per output channel and ``activations_16bit`` at 16 bits, through the
    quantizer's tensor overrides (the rest as ``config`` says)."""
    with quiet():
        _build_variant(source, out, config, calib, input_name, excluded, per_channel_weights, activations_16bit)


def _build_variant(source: Path, out: Path, config: QuantizeConfig, calib: np.ndarray | None, input_name: str,
                   excluded: list[str], per_channel_weights: tuple[str, ...], activations_16bit: tuple[str, ...]) -> None:
    import onnx

    if (per_channel_weights or activations_16bit) and (config.mode is not QuantMode.STATIC
                                                      or config.format is not QuantFormat.QDQ):
        raise QuantizeError(f"{config.model}: per-tensor overrides (per-channel weights, 16-bit activations) need "
                            f"static QDQ, not {config.mode.value} {config.format.value}")

    if config.mode is QuantMode.FP16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(source))
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(excluded) or None)
        onnx.save(converted, str(out))
        return
    q = _ort_quant()
    try:
        if config.mode is QuantMode.DYNAMIC:
            q.quantize_dynamic(str(source), str(out), weight_type=q.QuantType.QInt8, per_channel=config.per_channel,
                               nodes_to_exclude=list(excluded))
            return
        assert calib is not None
        wide = q.QuantType.QUInt16 if config.activation_type is ActivationType.UINT8 else q.QuantType.QInt16
        overrides: dict[str, list[dict[str, Any]]] = {w: [{"axis": 0}] for w in per_channel_weights}  # OIHW: O
        overrides |= {t: [{"quant_type": wide}] for t in activations_16bit}
        q.quantize_static(
            str(source), str(out), CalibrationReader(input_name, calib, model_batch(source)),
            quant_format=q.QuantFormat.QDQ if config.format is QuantFormat.QDQ else q.QuantFormat.QOperator,
            activation_type=q.QuantType.QUInt8 if config.activation_type is ActivationType.UINT8 else q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8, per_channel=config.per_channel,
            calibrate_method={CalibrationMethod.MINMAX: q.CalibrationMethod.MinMax,
                              CalibrationMethod.ENTROPY: q.CalibrationMethod.Entropy,
                              CalibrationMethod.PERCENTILE: q.CalibrationMethod.Percentile}[config.calibration_method],
            nodes_to_exclude=list(excluded),
            extra_options={"TensorQuantOverrides": overrides} if overrides else None,
        )
    except Exception as exc:  # noqa: BLE001 (the quantizer raises many kinds)
        raise QuantizeError(f"{config.model}: onnxruntime's quantizer failed: {type(exc).__name__}: "
                            f"{shorten(exc, 200)}") from None

