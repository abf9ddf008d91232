"""The fix-ups and checks every route's ONNX graph goes through before export keeps it.

``finish_graph``: stray inputs dropped, one image input and the expected output, fused nodes named after their
Keras layers, a dynamic batch, simplification, the ONNX checker. ``check_against_keras``: the graph's outputs
against Keras' on a few seeded random images, within 1e-3 (4x its own rounding where larger; parity is the
precision gate).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from cnnkit.errors import ExportError, shorten
from cnnkit.export.simplify import SimplifyReport, simplify_graph
from cnnkit.graph.index import GraphIndex
from cnnkit.graph.info import value_dims

if TYPE_CHECKING:
    from cnnkit.export.onnx import ExportConfig

ROUTE_CHECK_SAMPLES = 4  # seeded random images each route's graph is run on, against Keras
ROUTE_CHECK_ATOL = 1e-3  # what a working route must meet (parity is the precision gate)
BATCH_DIM = "batch"


def finish_graph(model_proto: Any, keras_model: Any, config: ExportConfig) -> SimplifyReport | None:
    """Dynamic batch, I/O and checker checks, simplification; returns what simplification did (None: off)."""
    import onnx

    _drop_unread_inputs(model_proto, config.input_name)
    _check_onnx_io(model_proto, keras_model, config)
    _name_fused_nodes(model_proto)
    _set_dynamic_batch(model_proto)
    simplified = simplify_graph(model_proto) if config.simplify else None
    try:
        onnx.checker.check_model(model_proto, full_check=True)
        onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the exported graph fails the ONNX checker: {shorten(exc, 300)}") from None
    return simplified


def _check_onnx_io(model_proto: Any, keras_model: Any, config: ExportConfig) -> None:
    """The ONNX graph itself has one image input and the one expected output (not only the Keras model)."""
    graph = model_proto.graph
    for kind, values, name, tensor in (("input", graph.input, config.input_name, keras_model.inputs[0]),
                                       ("output", graph.output, config.output_name, keras_model.outputs[0])):
        found = [(v.name, value_dims(v)) for v in values]
        want = tuple(int(d) for d in tensor.shape[1:])
        if len(found) != 1 or found[0][0] != name or tuple(found[0][1][1:]) != want:
            listed = ", ".join(f"{n} {list(d)}" for n, d in found) or "none"
            raise ExportError(f"the ONNX graph should have one {kind} {name} [batch, {', '.join(map(str, want))}], "
                              f"it has {len(found)}: {listed}")


def check_against_keras(model_proto: Any, keras_model: Any, config: ExportConfig, feed: str | None
                         ) -> dict[str, Any]:
    """Run the graph on a few seeded random images, fed as its preprocessing record says, and compare with
    Keras within 1e-3 (or 4x the graph's own rounding: optimisations on vs off)."""
    import numpy as np

    from cnnkit.parity.tolerance import KERAS_ONNX_RTOL
    from cnnkit.parity.rounding import ROUNDING_HEADROOM, rounding_floor

    shape = tuple(int(d) for d in keras_model.inputs[0].shape[1:])
    x = np.random.default_rng(0).integers(0, 256, (ROUTE_CHECK_SAMPLES, *shape)).astype(np.float32)
    if feed:
        from cnnkit.data.preprocess import PreprocessRecord

        x = PreprocessRecord.from_json(feed).normalize(x).astype(np.float32)
    try:
        floor, outs = rounding_floor(model_proto.SerializeToString(), x, label="exported graph")
    except Exception as exc:  # noqa: BLE001 (ONNX Runtime rejects a broken graph in many ways)
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {shorten(exc, 300)}") from None
    got = outs[config.output_name].astype(np.float64)
    want = np.asarray(keras_model(x, training=False), dtype=np.float64)
    diff = np.abs(got - want)
    # A check that the route works, not parity's precision gate: a broken conversion (a lost normalisation, wrong
    # weights) moves outputs by 1e-2 and more; a deep model's own float32 rounding (graph optimisations on vs
    # off, and TensorFlow's kernels vs ONNX Runtime's) by up to ~1e-4, more in a network that amplifies it.
    atol = max(ROUTE_CHECK_ATOL, ROUNDING_HEADROOM * floor)
    excess = float(np.max(diff - KERAS_ONNX_RTOL * np.abs(want)))
    check = {"samples": ROUTE_CHECK_SAMPLES, "max_abs_diff": float(diff.max()), "atol": atol,
             "rtol": KERAS_ONNX_RTOL, "rounding_floor": floor}
    if not np.isfinite(diff).all() or excess > atol:
        raise ExportError(f"its outputs differ from Keras by up to {diff.max():.3g} on {ROUTE_CHECK_SAMPLES} random "
                          f"images (allowed {atol:.2g} + {KERAS_ONNX_RTOL:g}*|Keras|)")
    return check


_WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _name_fused_nodes(model_proto: Any) -> None:
    """Name each convolution or matrix product after the Keras layer whose weights it holds.

    tf2onnx folds a BatchNormalization into the convolution before it and names the result after the
    BatchNormalization (``model/bn_Conv1_1/batchnorm/mul_1``), or gives it a generated name (``Conv__22``)
    where it also absorbed a transpose. The node becomes ``model/<its scope>/<conv layer>+<bn layer>/Conv``:
    the convolution's Keras name, and still the scope whose output it computes (parity maps layers by scope).
    """
    used = {node.name for node in model_proto.graph.node}
    for node in model_proto.graph.node:
        if node.op_type not in _WEIGHTED_OPS or len(node.input) < 2:
            continue
        weight_scope = _layer_scope(node.input[1])
        if weight_scope is None:
            continue
        node_scope = _layer_scope(node.name + "/op")
        if node_scope == weight_scope:
            continue
        out_scope = node_scope or (_layer_scope(node.input[2]) if len(node.input) > 2 else None) or weight_scope
        label = _layer_name(weight_scope) + (f"+{_layer_name(out_scope)}" if out_scope != weight_scope else "")
        name = base = f"{node.input[1].split('/')[0]}/{out_scope}/{label}/{node.op_type}"
        k = 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        node.name = name


def _layer_scope(tensor_or_node: str) -> str | None:
    """``layer_1`` in ``model_1/layer_1/op:0`` (the Keras layer's TensorFlow scope); None without one."""
    parts = tensor_or_node.split("/")
    return parts[1] if len(parts) >= 3 else None


def _layer_name(scope: str) -> str:
    return re.sub(r"_\d+$", "", scope)


def _drop_unread_inputs(model_proto: Any, image_input: str) -> None:
    """Remove graph inputs besides the image that no node reads (captured constants that TensorFlow's
    optimiser already folded in: both routes leave Normalization's statistics behind as such inputs)."""
    read = GraphIndex.of(model_proto).readers
    for inp in list(model_proto.graph.input):
        if inp.name != image_input and inp.name not in read:
            model_proto.graph.input.remove(inp)


def rename_tensor(model_proto: Any, old: str, new: str) -> None:
    for node in model_proto.graph.node:
        for seq in (node.input, node.output):
            for k, name in enumerate(seq):
                if name == old:
                    seq[k] = new
    for vi in list(model_proto.graph.output) + list(model_proto.graph.value_info):
        if vi.name == old:
            vi.name = new


def _set_dynamic_batch(model_proto: Any) -> None:
    """Name the leading dimension of every graph input and output ``batch``."""
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM
