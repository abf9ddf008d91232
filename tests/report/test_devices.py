"""Several devices side by side: typed bench results in (fleet entries too), one runtime label out."""

import io
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from cnnkit.bench.result import BenchResult
from cnnkit.report.devices import device_results, device_rows
from cnnkit.results.load import from_dict

GOLDEN = Path(__file__).parents[1] / "golden" / "v0.1.0"


def _fleet(entries: list[tuple[str, dict]], missing: tuple = ()) -> dict:
    return {"schema": "cnnkit.fleet-bench/1", "created": "2026-01-01T00:00:00+00:00", "selector": "all",
            "entries": [{"device": d, "node_id": f"{i:056x}", "hostname": d, "labels": {"device": d}, "result": r}
                        for i, (d, r) in enumerate(entries)], "missing": list(missing), "engine": {}}


def test_fleet_entries_load_as_typed_bench_results() -> None:
    bench = json.loads((GOLDEN / "bench.json").read_text())
    gone = {"device": "gamma", "node_id": "c" * 56, "reason": "the node died"}
    fleet = from_dict(_fleet([("alpha", bench), ("beta", bench)], (gone,)), "fleet.json")
    assert all(isinstance(e.result, BenchResult) for e in fleet.entries)
    pairs, missing = device_results([(Path("fleet.json"), fleet)])
    assert [d for d, _ in pairs] == ["alpha", "beta"] and missing == [gone]
    assert pairs[0][1] == BenchResult.from_dict(bench)


def test_a_device_row_names_the_runtime_and_the_models_own_precision() -> None:
    from cnnkit.cli import report

    result = BenchResult.load(GOLDEN / "bench.json")  # model.onnx fp32 and model.best.onnx int8-static, on ONNX Runtime
    openvino = replace(result, cases=tuple(replace(c, runtime="openvino", precision="bf16") for c in result.cases))
    rows = device_rows([("alpha", result), ("beta", openvino)])
    assert {(r.device, r.model, r.label) for r in rows} == {
        ("alpha", "model.onnx", "onnxruntime"), ("alpha", "model.best.onnx", "onnxruntime:int8-static"),
        ("beta", "model.onnx", "openvino:bf16"), ("beta", "model.best.onnx", "openvino:bf16")}
    buf = io.StringIO()
    saved, report.console = report.console, Console(file=buf, width=120, highlight=False)
    try:
        report.render_devices(rows)
    finally:
        report.console = saved
    lines = buf.getvalue().splitlines()
    for r in rows:  # the terminal table shows the same label
        assert any(r.device in line and r.model in line and f" {r.label} " in line for line in lines), r
