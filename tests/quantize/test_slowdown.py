"""Why an INT8 variant is slower, measured on the graph ONNX Runtime actually runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from cnnkit.quantize.build import build_variant
from cnnkit.quantize.config import QuantizeConfig
from cnnkit.quantize.slowdown import cpu_integer_features, explain_slowdown
from cnnkit.runtimes.sessions import SessionConfig
from tests.onnx_graphs import float_ops_between_convs, tiny_classifier


def _int8(model: Path, out: Path, input_name: str, shape: tuple[int, ...]) -> Path:
    calib = np.random.default_rng(0).uniform(0, 1, (16, *shape)).astype(np.float32)  # ranges for a test graph
    build_variant(model, out, QuantizeConfig(model, out), calib, input_name, [])
    return out


def test_ops_without_integer_kernels_are_named_and_counts_match_the_optimised_graph(tmp_path: Path) -> None:
    fp32 = float_ops_between_convs(tmp_path / "f.onnx")
    q = _int8(fp32, tmp_path / "q.onnx", "x", (3, 32, 32))
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    s = explain_slowdown(fp32, q, SessionConfig(), tmp_path, isa=[], profile_input=("x", x))
    # Counted here independently, from the graph ONNX Runtime wrote.
    ran = onnx.load(str(tmp_path / "variant.optimized.onnx")).graph
    ops = Counter(n.op_type for n in ran.node)
    v = s.variant
    assert v.nodes == len(ran.node) and v.quantize == ops["QuantizeLinear"] and v.dequantize == ops["DequantizeLinear"]
    assert v.integer_kernels == sum(k for t, k in ops.items() if t.startswith("QLinear")) and v.integer_kernels >= 3
    assert s.fp32_nodes == len(onnx.load(str(tmp_path / "fp32.optimized.onnx")).graph.node)
    assert s.variant_nodes == len(onnx.load(str(q)).graph.node)
    assert v.float_ops == {"Sin": 1, "Erf": 1} and set(v.float_nodes) == {"sin1", "erf2"}
    assert v.boundary == 2  # the float input's QuantizeLinear and the float output's DequantizeLinear
    assert any("no integer kernel" in c and "Sin x1" in c and "Erf x1" in c for c in s.causes)
    assert any("--exclude-node" in h for h in s.helps) and any("--format qoperator" in h for h in s.helps)
    assert s.cpu_integer == "neither" and any("neither VNNI nor AMX" in c for c in s.causes)
    assert "QLinearConv" in s.variant_us_by_type and "Sin" in s.variant_us_by_type and s.fp32_us_by_type
    assert s.profile_batch == 1


def test_a_fully_fused_variant_blames_no_float_ops(tmp_path: Path) -> None:
    fp32 = tiny_classifier(tmp_path / "f.onnx", batch="N", hw=8)
    q = _int8(fp32, tmp_path / "q.onnx", "image", (3, 8, 8))
    s = explain_slowdown(fp32, q, SessionConfig(), tmp_path, isa=["avx512_vnni"])
    assert s.variant.float_ops.keys() <= {"Softmax"}  # a classifier's last op reads the dequantized scores
    assert s.cpu_integer == "VNNI" and not any("VNNI" in c for c in s.causes)
    assert s.variant_us_by_type == {} and s.profile_batch is None


@pytest.mark.parametrize(("isa", "said"), [(["amx_int8", "avx512_vnni"], "AMX"), (["avx_vnni"], "VNNI"),
                                           (["avx2", "fma"], "neither")])
def test_cpu_integer_features(isa: list[str], said: str) -> None:
    assert cpu_integer_features(isa) == said


def test_the_float_island_is_the_quantizable_neighbours_of_the_float_ops(tmp_path: Path) -> None:
    from cnnkit.quantize.slowdown import float_island

    fp32 = float_ops_between_convs(tmp_path / "f.onnx")
    assert float_island(fp32, ("sin1",)) == ("conv1", "conv2")
    assert float_island(fp32, ("sin1", "erf2")) == ("conv1", "conv2", "conv3")
    assert float_island(fp32, ()) == ()
    classifier = tiny_classifier(tmp_path / "c.onnx", batch="N")
    assert float_island(classifier, ("softmax",)) == ()  # its output is the model's: float anyway


def test_the_cpu_features_apply_where_the_variant_really_runs_on_the_cpu(tmp_path: Path) -> None:
    """A CUDA request that fell back runs on the CPU: its integer features are the CPU's; on a GPU, none are."""
    fp32 = tiny_classifier(tmp_path / "f.onnx", batch="N", hw=8)
    q = _int8(fp32, tmp_path / "q.onnx", "image", (3, 8, 8))
    s = explain_slowdown(fp32, q, SessionConfig(provider="cuda", allow_fallback=True), tmp_path, isa=["avx512_vnni"])
    from cnnkit.runtimes.sessions import create_session

    _, info = create_session(q, SessionConfig(provider="cuda", allow_fallback=True))
    assert s.cpu_integer == ("VNNI" if info.active == "CPUExecutionProvider" else ""), (s.cpu_integer, info.active)
