"""Results written by an earlier cnnkit still load, render and compare (tests/golden/README.md says how they were made)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnkit.results.load import SCHEMAS, load_result, result_type
from tests.cli.test_cli_foundation import run

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v0.1.0"
FILES = sorted(GOLDEN.glob("*.json"))


def test_every_golden_file_is_here() -> None:
    schemas = {json.loads(f.read_text())["schema"] for f in FILES}
    # One file of each schema a command writes on its own (fleet-bench needs a Ray cluster; recommend rides in bench),
    # of those v0.1.0 had (the bundle, verify, card and scenario schemas came later).
    later = {"cnnkit.bundle/1", "cnnkit.verify/1", "cnnkit.fleet-verify/1", "cnnkit.card/1",
             "cnnkit.scenario/1"}
    assert schemas == set(SCHEMAS) - {"cnnkit.fleet-bench/1", "cnnkit.recommend/1"} - later


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_golden_result_loads_as_its_typed_result(path: Path) -> None:
    schema = json.loads(path.read_text())["schema"]
    result = load_result(path)
    assert isinstance(result, result_type(schema))


def test_golden_bench_keeps_its_recommendation() -> None:
    result = load_result(GOLDEN / "bench-recommend.json")
    assert result.recommendation and result.recommendation["schema"] == "cnnkit.recommend/1"


def test_report_renders_every_golden_result(tmp_path: Path) -> None:
    renderable = ("train", "parity", "eval", "bench", "bench-recommend", "quantize-auto", "quantize-fp16")
    r = run("report", *(GOLDEN / f"{name}.json" for name in renderable), "-o", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "93.35" in md  # the golden run's accuracy (train.json, eval.json)
    assert "static-qdq-u8s8-minmax-perchannel" in md  # quantize --auto's choice


def test_compare_reads_two_golden_bench_results(tmp_path: Path) -> None:
    r = run("compare", GOLDEN / "bench.json", GOLDEN / "bench-short.json", "--json", tmp_path / "c.json")
    assert r.exit_code in (0, 1), r.output  # 1 only for a confirmed regression between the two runs
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["schema"] == "cnnkit.compare/1"
    assert [row["key"] for row in out["latency"]] == ["model.onnx | CPUExecutionProvider | batch 1"]
