"""Graph simplifications that keep the model's function and remove per-call work.

tf2onnx leaves two things a small CNN pays for at every call:
* Flatten as a dynamic shape computation (Shape -> Gather -> Cast -> Slice -> Concat -> Cast -> Reshape):
  when shape inference knows every non-batch dimension, the target shape is the constant ``[-1, N]``.
* The baked-in normalisation ``x * scale`` as its own pass over the input: a scalar scale in front of a
  convolution (through layout-only Reshape/Transpose) folds into the convolution's weights,
  ``conv(W, s*x) = conv(s*W, x)``, exactly up to float rounding. Only a zero offset is folded: with padding,
  an offset does not commute with the convolution.
Each transform is checked by shape inference; parity tests compare the result with Keras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit.graph.index import GraphIndex, with_extra_outputs
from cnnkit.graph.metadata import SCALE_FOLDED


@dataclass
class SimplifyReport:
    static_reshapes: list[str] = field(default_factory=list)
    folded_scales: list[str] = field(default_factory=list)
    removed_nodes: int = 0

    def describe(self) -> str:
        parts = []
        if self.static_reshapes:
            parts.append(f"static shape for {len(self.static_reshapes)} reshape(s)")
        if self.folded_scales:
            parts.append(f"{SCALE_FOLDED} into {', '.join(self.folded_scales)}")
        parts.append(f"{self.removed_nodes} node(s) removed")
        return "; ".join(parts)


def simplify_graph(model: Any) -> SimplifyReport:
    """Simplify ``model`` (an onnx ModelProto) in place; return what was done."""
    import onnx

    report = SimplifyReport()
    before = len(model.graph.node)
    _static_reshapes(model, report)
    _fold_input_scale(model, report)
    _remove_dead_nodes(model)
    report.removed_nodes = before - len(model.graph.node)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return report


def _static_reshapes(model: Any, report: SimplifyReport) -> None:
    """Give a Reshape with a computed target the constant ``[-1, d1, ...]`` when that is what it computes.

    Shape inference cannot see through the computed target, so the graph is run at batch sizes 1 and 3 and
    the Reshape must give ``(batch, d1, ...)`` both times, from an input whose non-batch dims are static
    and hold the same number of elements.
    """
    import onnx
    from onnx import numpy_helper

    inits = GraphIndex.of(model).initializers
    candidates = [n for n in model.graph.node if n.op_type == "Reshape" and len(n.input) == 2 and n.input[1] not in inits]
    if not candidates:
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    static = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        rest = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if dims and all(isinstance(d, int) and d > 0 for d in rest):
            static[vi.name] = int(np.prod(rest)) if rest else 1
    candidates = [n for n in candidates if n.input[0] in static]
    if not candidates:
        return
    seen: dict[str, list[tuple[int, ...]]] = {n.output[0]: [] for n in candidates}
    observed = _run_shapes(with_extra_outputs(model, list(seen)), model, list(seen))
    if observed is None:
        return
    for node in candidates:
        shapes = [obs[node.output[0]] for obs in observed]
        (b1, *rest1), (b3, *rest3) = shapes
        if (b1, b3) != (1, 3) or rest1 != rest3 or int(np.prod(rest1)) != static[node.input[0]]:
            continue
        name = f"{node.output[0]}__static_shape"
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1, *rest1], dtype=np.int64), name))
        node.input[1] = name
        report.static_reshapes.append(node.name)


def _run_shapes(serialized: bytes, model: Any, names: list[str]) -> list[dict[str, tuple[int, ...]]] | None:
    """Output shapes of ``names`` at batch sizes 1 and 3 (None if the graph's input is not batch-first static)."""
    from cnnkit.runtimes.sessions import create_session

    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    rest = [d.dim_value for d in dims[1:]]
    if not all(d > 0 for d in rest):
        return None
    dtype = {1: np.float32, 2: np.uint8, 10: np.float16}.get(inp.type.tensor_type.elem_type)
    if dtype is None:
        return None
    session, _ = create_session(serialized)  # the one session builder (default: the CPU)
    out_names = [o.name for o in session.get_outputs()]
    result = []
    for b in (1, 3):
        values = session.run(None, {inp.name: np.zeros((b, *rest), dtype)})
        shapes = dict(zip(out_names, (tuple(v.shape) for v in values), strict=True))
        result.append({n: shapes[n] for n in names})
    return result


def _fold_input_scale(model: Any, report: SimplifyReport) -> None:
    from onnx import numpy_helper

    index = GraphIndex.of(model)
    inits = index.initializers
    for mul in list(model.graph.node):
        if mul.op_type != "Mul":
            continue
        scalar = next((i for i in mul.input if i in inits and numpy_helper.to_array(inits[i]).size == 1), None)
        if scalar is None:
            continue
        data = next(i for i in mul.input if i != scalar)
        scale = float(numpy_helper.to_array(inits[scalar]).reshape(()))
        # Follow single-consumer, layout-only ops (and an Add of zero) down to a Conv.
        chain, tensor, node = [], mul.output[0], None
        while True:
            users = index.consumers(tensor)
            if len(users) != 1 or tensor in index.outputs:
                node = None
                break
            node = users[0]
            if node.op_type == "Add":
                other = next((i for i in node.input if i != tensor), None)
                if other not in inits or np.any(numpy_helper.to_array(inits[other])):
                    node = None
                    break
                chain.append(node)
                tensor = node.output[0]
                continue
            if node.op_type in ("Reshape", "Transpose") and node.input[0] == tensor:
                tensor = node.output[0]
                continue
            break
        if node is None or node.op_type != "Conv" or node.input[0] != tensor or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        if index.uses(weight.name) != 1:
            continue  # shared weights: scaling them would change another node
        w = numpy_helper.to_array(weight)
        weight.CopyFrom(numpy_helper.from_array((w * np.asarray(scale, dtype=w.dtype)).astype(w.dtype), weight.name))
        # Bypass the Mul (and zero Adds): their consumers read the Mul's data input directly.
        for removed in [mul, *chain]:
            _bypass(model, removed, data if removed is mul else removed_input(removed, inits))
        report.folded_scales.append(node.name)
        index = GraphIndex.of(model)  # the graph changed
        inits = index.initializers


def removed_input(node: Any, inits: dict[str, Any]) -> str:
    return next(i for i in node.input if i not in inits)


def _bypass(model: Any, node: Any, replacement: str) -> None:
    out = node.output[0]
    for other in model.graph.node:
        for k, name in enumerate(other.input):
            if name == out:
                other.input[k] = replacement
    model.graph.node.remove(node)


def _remove_dead_nodes(model: Any) -> None:
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(list(model.graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    keep.reverse()
    del model.graph.node[:]
    model.graph.node.extend(keep)
    live = [i for i in model.graph.initializer if i.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)
