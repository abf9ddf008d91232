"""Why an INT8 variant is slower than FP32, measured: the graph ONNX Runtime actually runs (after its own
optimisations and fusions, written through ``SessionOptions.optimized_model_filepath``), the Q/DQ nodes it did not
fuse into integer kernels and the ops between them that run in float, kernel time per op type (ONNX Runtime's
profiler), and whether the CPU has integer dot-product instructions (VNNI, AMX)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.runtimes.sessions import SessionConfig

# Integer kernels: what a fused QDQ group becomes, or what QOperator and dynamic quantization write directly.
_INTEGER_OPS = {"ConvInteger", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                "DynamicQuantizeLinear", "QAttention", "NhwcQLinearConv"}


def is_integer_kernel(op_type: str) -> bool:
    return op_type.startswith("QLinear") or op_type in _INTEGER_OPS


@dataclass(frozen=True)
class GraphCounts:
    """One graph as ONNX Runtime runs it (or as written, for ``written``)."""

    nodes: int
    quantize: int  # QuantizeLinear nodes (float -> int8 at run time)
    dequantize: int  # DequantizeLinear nodes (int8 -> float at run time)
    boundary: int  # of those, the ones at the model's float inputs and outputs: a float32 interface needs them
    integer_kernels: int
    float_ops: dict[str, int]  # op type -> nodes that read a DequantizeLinear's output: they run in float
    float_nodes: tuple[str, ...]  # those nodes, by name (at most 20)


def count_graph(model: Any) -> GraphCounts:
    """Counts of an ONNX graph (a ``ModelProto``): Q/DQ nodes, integer kernels, and the float ops fed by a
    DequantizeLinear (an op with no integer kernel in the provider, run in float between a DQ and a Q)."""
    from cnnkit.graph.index import GraphIndex

    graph, index = model.graph, GraphIndex.of(model)
    dq_outputs = {o for o, n in index.producers.items() if n.op_type == "DequantizeLinear"}
    boundary = sum(1 for n in graph.node if (n.op_type == "QuantizeLinear" and n.input[0] in index.inputs)
                   or (n.op_type == "DequantizeLinear" and n.output[0] in index.outputs))
    floats = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
              and not is_integer_kernel(n.op_type) and any(i in dq_outputs for i in n.input)]
    return GraphCounts(
        nodes=len(graph.node),
        quantize=sum(n.op_type == "QuantizeLinear" for n in graph.node),
        dequantize=sum(n.op_type == "DequantizeLinear" for n in graph.node),
        boundary=boundary,
        integer_kernels=sum(is_integer_kernel(n.op_type) for n in graph.node),
        float_ops=dict(Counter(n.op_type for n in floats)),
        float_nodes=tuple(n.name or n.op_type for n in floats[:20]),
    )


def optimized_graph(model: Path, session: SessionConfig, out: Path) -> Any:
    """The graph ONNX Runtime runs for ``model`` on ``session``'s provider, written to ``out`` and loaded."""
    return _optimized(model, session, out)[0]


def _optimized(model: Path, session: SessionConfig, out: Path) -> tuple[Any, Any]:
    """:func:`optimized_graph`, and the :class:`~cnnkit.runtimes.base.RunnerInfo` of the session that ran it."""
    import onnx

    from cnnkit.runtimes.onnxruntime import session_runner_info
    from cnnkit.runtimes.sessions import create_session

    created, info = create_session(model, session, optimized_model_path=out)
    del created
    return onnx.load(str(out), load_external_data=False), session_runner_info(info, session, precision="model")


def cpu_integer_features(isa: list[str]) -> str:
    """"AMX", "VNNI" or "neither": the CPU's int8 dot-product instructions (from :func:`cnnkit.envinfo.cpu_info`)."""
    if "amx_int8" in isa:
        return "AMX"
    if "avx512_vnni" in isa or "avx_vnni" in isa:
        return "VNNI"
    return "neither"


@dataclass(frozen=True)
class SlowdownExplanation:
    """An INT8 variant against FP32, measured on what ONNX Runtime runs; ``causes`` and ``helps`` in words."""

    provider: str
    fp32_nodes: int  # FP32's graph as ONNX Runtime runs it
    variant_nodes: int  # the variant as written
    variant: GraphCounts  # the variant as ONNX Runtime runs it
    cpu_integer: str  # "AMX", "VNNI", "neither"; "" off the CPU
    profile_batch: int | None = None
    fp32_us_by_type: dict[str, float] = field(default_factory=dict)  # kernel µs per run, per op type
    variant_us_by_type: dict[str, float] = field(default_factory=dict)
    causes: tuple[str, ...] = ()
    helps: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain_slowdown(fp32: Path, variant: Path, session: SessionConfig, work: Path, isa: list[str],
                     profile_input: tuple[str, np.ndarray] | None = None, format_qdq: bool = True
                     ) -> SlowdownExplanation:
    """Why ``variant`` may run slower than ``fp32``: counts from both optimised graphs, kernel time per op type
    where ``profile_input`` (input name, a batch) is given (10 profiled runs each), and the CPU's integer features
    (``isa``: :func:`cnnkit.envinfo.cpu_info`'s). ``format_qdq``: the variant is QDQ (QOperator is a help)."""
    import onnx

    fp32_graph = optimized_graph(fp32, session, work / "fp32.optimized.onnx")
    variant_graph, ran = _optimized(variant, session, work / "variant.optimized.onnx")
    counts = count_graph(variant_graph)
    written = len(onnx.load(str(variant), load_external_data=False).graph.node)
    features = cpu_integer_features(isa) if ran.device == "cpu" else ""  # where it really runs (a fallback: the CPU)
    fp32_us: dict[str, float] = {}
    variant_us: dict[str, float] = {}
    batch = None
    if profile_input is not None:
        from cnnkit.bench.profile import profile_model

        name, x = profile_input
        batch = int(x.shape[0])
        fp32_us = {t.op_type: t.us for t in profile_model(fp32, session, x, name).by_type}
        variant_us = {t.op_type: t.us for t in profile_model(variant, session, x, name).by_type}
    causes, helps = _diagnosis(counts, features, variant_us, format_qdq)
    return SlowdownExplanation(provider=session.provider, fp32_nodes=len(fp32_graph.graph.node), variant_nodes=written,
                               variant=counts, cpu_integer=features, profile_batch=batch, fp32_us_by_type=fp32_us,
                               variant_us_by_type=variant_us, causes=causes, helps=helps)


def _diagnosis(c: GraphCounts, features: str, variant_us: dict[str, float], format_qdq: bool
               ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    causes: list[str] = []
    helps: list[str] = []
    if c.float_ops:
        ops = ", ".join(f"{t} x{k}" for t, k in sorted(c.float_ops.items(), key=lambda kv: -kv[1]))
        causes.append(f"{sum(c.float_ops.values())} node(s) have no integer kernel and run in float between a "
                      f"DequantizeLinear and a QuantizeLinear: {ops} ({', '.join(c.float_nodes[:5])})")
        helps.append("keep those nodes and the ones between them in float (--exclude-node NAME), so the graph "
                     "converts once, not around each of them")
    inner = c.quantize + c.dequantize - c.boundary
    if inner > 0:
        causes.append(f"{inner} QuantizeLinear/DequantizeLinear node(s) inside the graph are left unfused by the "
                      f"provider (every one converts a whole tensor per run)")
        if format_qdq:
            helps.append("QOperator format (--format qoperator) fuses at quantization time where ONNX Runtime's QDQ "
                         "fusion does not")
        helps.append("another runtime that fuses QDQ itself (--runtime openvino)")
    total = sum(variant_us.values())
    qdq_us = variant_us.get("QuantizeLinear", 0.0) + variant_us.get("DequantizeLinear", 0.0)
    if total > 0 and qdq_us / total >= 0.1:
        causes.append(f"QuantizeLinear and DequantizeLinear take {100 * qdq_us / total:.0f} % of the variant's kernel "
                      f"time")
    if features == "neither":
        causes.append("this CPU has neither VNNI nor AMX: int8 dot products run on AVX2, widened to 16 bits, often "
                      "no faster than float32")
        helps.append("run INT8 on a CPU with VNNI or AMX, or keep FP32 here (the variant still saves size)")
    return tuple(causes), tuple(helps)


def float_island(model: Path, float_nodes: tuple[str, ...]) -> tuple[str, ...]:
    """The quantizable nodes (Conv, MatMul, Gemm) right before and after ``float_nodes`` in ``model``: kept in
    float with them, the graph converts once around the region instead of around every op without an integer
    kernel (what ``--auto`` tries when a variant runs such ops in float). A float node that writes a model output
    is left out."""
    import onnx

    from cnnkit.graph.index import GraphIndex
    from cnnkit.quantize.diagnose import QUANTIZABLE_OPS

    index = GraphIndex.of(onnx.load(str(model), load_external_data=False))
    wanted = set(float_nodes)
    found: list[str] = []
    for node in index.nodes:
        if node.name not in wanted or any(o in index.outputs for o in node.output):
            continue  # a model's last op (a Softmax) hands float out anyway: no conversion to save
        around = [index.producers.get(t) for t in node.input] + [c for t in node.output for c in index.consumers(t)]
        for other in around:
            if other is not None and other.op_type in QUANTIZABLE_OPS and other.name and other.name not in found:
                found.append(other.name)
    return tuple(found)
