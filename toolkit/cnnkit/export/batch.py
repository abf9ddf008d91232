"""``cnnkit export --make-batch-dynamic MODEL.onnx -o OUT.onnx``: let a fixed-batch ONNX model take any batch.

Exporters that trace with one example (PyTorch's, most often) write the batch as a constant: in the input
and output shapes, and sometimes in a ``Reshape`` target (``x.view(1, -1)``). The input and output batch
dimensions are renamed ``batch``; a constant ``Reshape`` target whose first entry is the old batch, on a
tensor whose first dimension is the batch (by shape inference, or where a shape computed at run time hides it,
by :mod:`cnnkit.graph.fold`), becomes 0 ("copy the input's dimension"); at IR 3, where initializers are also
graph inputs, the new target is listed as one too. Anything else that
could hold the batch (``Expand``, ``Tile``, ``ConstantOfShape`` with constant shapes) is refused. The result
must pass the ONNX checker and strict shape inference, and run in ONNX Runtime at two batch sizes, each image
giving the outputs the original model gives it; otherwise nothing is written.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, shorten
from cnnkit.graph import metadata as meta
from cnnkit.graph.fold import infer_shapes_folded
from cnnkit.graph.index import GraphIndex
from cnnkit.graph.info import image_input, load_onnx
from cnnkit.io import atomic_path, check_not_input, check_writable

BATCH_DIM = "batch"
_SHAPE_OPS = {"Expand": 1, "Tile": 1, "ConstantOfShape": 0}
CHECK_BATCHES = (1, 3)
CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5


class BatchRewriteError(CnnkitError):
    """A fixed-batch model whose batch cannot safely be made dynamic."""


@dataclass(frozen=True)
class DynamicBatchResult:
    source: str
    output: str
    old_batch: int
    reshapes_rewritten: tuple[str, ...]
    checked_batches: tuple[int, ...]
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _constants(model: Any) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    # External initializers are weights (never shape targets); the scan runs without loading them.
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
           if i.data_location != onnx.TensorProto.EXTERNAL}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def _reshapes_to_rewrite(model: Any, old: int, label: str) -> list[tuple[Any, str, np.ndarray]]:
    """The ``Reshape`` nodes whose constant target starts with the batch ``old`` (node, target name, target);
    a :class:`BatchRewriteError` where the batch is baked in where it cannot be safely made dynamic."""
    import onnx

    # Which tensors carry the batch in their first dimension (shape inference on the original model; where a
    # shape computed at run time hides it, e.g. TF "same" padding, the graph with those computations folded).
    inferred = onnx.shape_inference.infer_shapes(model)
    first_dim: dict[str, Any] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims:
            first_dim[vi.name] = dims[0].dim_value if dims[0].HasField("dim_value") else None
    consts = _constants(model)
    reshape_inputs = [n.input[0] for n in model.graph.node if n.op_type == "Reshape" and len(n.input) > 1
                      and n.input[1] in consts and consts[n.input[1]].size and int(consts[n.input[1]].ravel()[0]) == old]
    if any(first_dim.get(name) is None for name in reshape_inputs):
        folded = infer_shapes_folded(model).shapes
        for name in reshape_inputs:
            if first_dim.get(name) is None and folded.get(name) and isinstance(folded[name][0], int):
                first_dim[name] = folded[name][0]
    found = []
    for node in model.graph.node:
        name = node.name or node.output[0]
        if node.op_type in _SHAPE_OPS:
            shape_in = node.input[_SHAPE_OPS[node.op_type]]
            if shape_in in consts and consts[shape_in].size and int(consts[shape_in].ravel()[0]) == old:
                raise BatchRewriteError(f"{label}: {node.op_type} node {name} has the batch {old} baked into its "
                                        f"constant shape {consts[shape_in].tolist()}; cannot make the batch dynamic safely",
                                        hint="export the model again with a dynamic batch (torch.onnx.export(..., dynamic_axes=...))")
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in consts:
            continue  # a target computed from Shape at run time follows the batch by itself
        shape = consts[node.input[1]]
        if shape.ndim != 1 or not shape.size or int(shape[0]) != old:
            continue
        allowzero = next((a.i for a in node.attribute if a.name == "allowzero"), 0)
        if first_dim.get(node.input[0]) != old or (allowzero and (shape[1:] == 0).any()):
            why = ("its input's first dimension is not the batch" if first_dim.get(node.input[0]) != old
                   else "it sets allowzero and has zeros of its own")
            raise BatchRewriteError(f"{label}: Reshape node {name} has the batch {old} baked into its target "
                                    f"{shape.tolist()} and {why}", hint="export the model again with a dynamic batch")
        found.append((node, node.input[1], shape))
    return found


def batch_rewrite_blocker(model: Any, label: str) -> str | None:
    """Why ``--make-batch-dynamic`` would refuse this fixed-batch model (the graph scan only; the rewrite also
    runs the result), or None where it is worth offering."""
    image = image_input(model, label)
    if image.batch is None:
        return None
    try:
        _reshapes_to_rewrite(model, image.batch, label)
    except BatchRewriteError as exc:
        return exc.message
    except Exception as exc:  # noqa: BLE001 (shape inference on an unusual graph: say so, do not guess)
        return f"{label}: the graph could not be checked ({type(exc).__name__})"
    return None


def make_batch_dynamic(source: str | os.PathLike[str], output: str | os.PathLike[str], force: bool = False) -> DynamicBatchResult:
    """Write a copy of ``source`` whose batch dimension is dynamic, checked as the module docstring says."""
    import onnx
    from onnx import numpy_helper

    src, out = Path(source), Path(output)
    check_not_input(out, src)
    check_writable(out, force)
    model = load_onnx(src)
    image = image_input(model, str(src))
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        try:  # weights beside the file (torch.onnx's dynamo exporter writes MODEL.onnx.data): the copy carries them
            model = onnx.load(str(src), load_external_data=True)
        except Exception as exc:  # noqa: BLE001 (a missing or short .data file)
            raise BatchRewriteError(f"{src}: cannot read its external weights: {shorten(exc, 200)}",
                                    hint="keep the .onnx.data file beside the .onnx") from None
    if image.batch is None:
        raise BatchRewriteError(f"{src}: the batch of input {image.name} {list(image.shape)} is already dynamic",
                                hint="use the model as it is")
    old = image.batch
    index = GraphIndex.of(model)
    rewritten: list[str] = []
    for node, target, shape in _reshapes_to_rewrite(model, old, str(src)):
        label = node.name or node.output[0]
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            # No zero in the target (checked): allowzero changes nothing, and 0 must mean "copy" below.
            keep = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(keep)
        new = shape.copy()
        new[0] = 0  # Reshape: 0 copies the input's dimension
        name = f"{target}__dynamic_batch"
        tensor = numpy_helper.from_array(new.astype(np.int64), name)
        model.graph.initializer.append(tensor)
        if model.ir_version < 4:  # IR 3: every initializer is also a graph input
            model.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, list(new.shape)))
        node.input[1] = name
        rewritten.append(label)
        if target not in index.producers and index.uses(target) == 1:
            # The old target goes, and with it its graph-input entry (IR 3 lists it; a later IR may too).
            for field in (model.graph.initializer, model.graph.input):
                keep = [i for i in field if i.name != target]
                del field[:]
                field.extend(keep)

    # The graph as rewritten; initializers (inputs too in IR 3) have no batch of theirs.
    for vi in [*GraphIndex.of(model).inputs.values(), *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == old:
            dims[0].Clear()
            dims[0].dim_param = BATCH_DIM
    del model.graph.value_info[:]  # intermediate shapes were inferred for the old batch
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 (onnx raises its own ValidationError/InferenceError)
        raise BatchRewriteError(f"{src}: the rewritten graph fails the ONNX checks: {shorten(exc, 200)}") from None
    data = model.SerializeToString()
    max_diff = _check_runs(src, data, image)
    meta.write(model, {meta.BATCH_MADE_DYNAMIC: f"cnnkit: fixed batch {old} -> dynamic"})
    with atomic_path(out, force=force) as tmp:
        onnx.save_model(model, str(tmp))
    return DynamicBatchResult(str(src), str(out), old, tuple(rewritten), CHECK_BATCHES, max_diff)


def _check_runs(src: Path, rewritten: bytes, image: Any) -> float:
    """Run the rewritten model at two batch sizes; every image must get what the original gives it."""
    from cnnkit.runtimes.onnxruntime import OnnxRuntimeRunner

    original = OnnxRuntimeRunner(src, label=src.name)
    try:
        candidate = OnnxRuntimeRunner(rewritten, label=f"{src.name} (dynamic batch)")
    except CnnkitError as exc:
        raise BatchRewriteError(f"{src}: ONNX Runtime refuses the rewritten graph: {exc.message}") from None
    rng = np.random.default_rng(0)
    worst = 0.0
    for b in CHECK_BATCHES:
        x = rng.integers(0, 256, (b, *image.hwc)).astype(np.float32)
        want = original.infer({original.input_name: image.to_model(x)})  # at the original batch, chunk by chunk
        try:
            got = dict(zip(candidate.output_names,
                           candidate.session.run(None, {candidate.input_name: image.to_model(x)}), strict=True))
        except Exception as exc:  # noqa: BLE001 (ORT's own error types: a shape baked in somewhere)
            raise BatchRewriteError(f"{src}: the rewritten graph does not run at batch {b}: "
                                    f"{shorten(exc, 200)}",
                                    hint="the batch is baked in somewhere; export the model again with a dynamic batch") from None
        for name, ref in want.items():
            value = got[name]
            if value.shape != ref.shape:
                raise BatchRewriteError(f"{src}: at batch {b} output {name} has shape {list(value.shape)}, expected "
                                        f"{list(ref.shape)}", hint="the batch is baked in somewhere; export again with a dynamic batch")
            diff = np.abs(value.astype(np.float64) - ref.astype(np.float64))
            if np.any(diff > CHECK_ATOL + CHECK_RTOL * np.abs(ref.astype(np.float64))):
                raise BatchRewriteError(f"{src}: at batch {b} output {name} differs from the original model's by up to "
                                        f"{float(diff.max()):.3g}", hint="the batch is baked in somewhere; export again with a dynamic batch")
            worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return worst
