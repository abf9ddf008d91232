"""cnnkit card: the deployment card from real results of parity, eval, bench, quantize and verify on a small
onnx.helper model and its bundle; missing sections are listed as missing, not left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnkit.stats import wilson_interval
from tests.cli.test_cli_foundation import run
from tests.imaging import write_digit_folder
from tests.onnx_graphs import tiny_classifier


def test_wilson_interval_is_inside_0_1_and_brackets_the_proportion() -> None:
    low, high = wilson_interval(64, 64)
    assert high == 1.0 and 0.94 < low < 0.95  # 64/64: [0.9436, 1]
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 0) == (None, None)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("card")
    model = tiny_classifier(root / "model.onnx", batch="batch", hw=28, channels=1, classes=10, seed=3)
    data = root / "digits"
    write_digit_folder(data, n=30)
    out = {"root": root, "model": model, "bundle": root / "model.cnnkit"}
    steps = {
        "bundle": ("bundle", model, "--data-dir", data, "--samples", "16", "-o", out["bundle"]),
        "verify": ("verify", out["bundle"], "--json", root / "verify.json"),
        "parity": ("parity", model, model, "--data-dir", data, "--samples", "16", "--json", root / "parity.json"),
        "eval": ("eval", model, "--data-dir", data, "--json", root / "eval.json"),
        "bench": ("bench", model, "--batch-sizes", "1", "--warmup", "1", "--min-time", "0", "--min-iterations", "5",
                  "--json", root / "bench.json"),
    }
    for name, args in steps.items():
        r = run(*args)
        assert r.exit_code == 0, (name, r.output)
    return out


def test_card_has_every_section_with_figures_and_commands(results: dict[str, Path], tmp_path: Path) -> None:
    root = results["root"]
    r = run("card", results["bundle"], root / "verify.json", root / "parity.json", root / "eval.json",
            root / "bench.json", "-o", tmp_path / "card.md")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "card.md").read_text()
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["schema"] == "cnnkit.card/1"
    sha = card["identity"][0]["sha256"]
    from cnnkit.io import sha256_file

    assert sha == sha256_file(results["model"]) and f"`{sha[:16]}…`" in md
    assert card["input_contract"]["height"] == 28 and card["input_contract"]["layout"] == "NCHW"
    assert card["parity"][0]["passed"] and card["verified"][0]["passed"]
    acc = card["accuracy"][0]
    assert acc["ci95"][0] <= acc["accuracy"] <= acc["ci95"][1] and acc["samples"] == 30
    assert card["latency"][0]["batch_size"] == 1 and card["latency"][0]["p50_ms"] > 0
    for heading in ("## Model identity", "## Input contract", "## Parity", "## Accuracy per precision",
                    "## Latency and throughput", "## Memory and cold start", "## Quantization recipe",
                    "## Where it was verified", "## Missing"):
        assert heading in md
    assert "$ cnnkit verify " in md and "$ cnnkit bench " in md and "$ cnnkit parity " in md
    missing = {m["section"] for m in card["missing"]}
    assert missing == {"memory", "cold_start", "load", "quantization"}  # not run: listed, not left out
    assert "- **quantization**: no result given; `cnnkit quantize" in md
    from cnnkit.results.load import load_result

    assert load_result(tmp_path / "card.json", expect="cnnkit.card/1").verified[0]["passed"]


def test_card_of_one_result_lists_the_rest_as_missing_and_refuses_to_overwrite(results: dict[str, Path],
                                                                                  tmp_path: Path) -> None:
    r = run("card", results["root"] / "verify.json", "-o", tmp_path / "card.md")
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "card.json").read_text())
    assert {m["section"] for m in card["missing"]} == {"identity", "input_contract", "parity", "accuracy", "latency",
                                                        "memory", "cold_start", "load", "quantization"}
    assert "missing: parity" in r.stdout
    r = run("card", results["root"] / "verify.json", "-o", tmp_path / "card.md")
    assert r.exit_code == 1 and "exists" in r.stderr
    r = run("card", results["root"] / "verify.json", "-o", tmp_path / "card.json")
    assert r.exit_code == 1 and "needs a .md name" in r.stderr


def test_card_of_a_fleet_result_has_a_latency_row_per_device(results: dict[str, Path], tmp_path: Path) -> None:
    """A fleet result's entries are typed bench results (what --engine ray writes: tests/distributed/test_fleet.py)."""
    bench = json.loads((results["root"] / "bench.json").read_text())
    fleet = {"schema": "cnnkit.fleet-bench/1", "created": "2026-01-01T00:00:00+00:00", "selector": "all",
             "entries": [{"device": d, "node_id": f"{i:056x}", "hostname": d, "labels": {"device": d}, "result": bench}
                         for i, d in enumerate(("alpha", "beta"))], "missing": [], "engine": {}}
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))
    r = run("card", tmp_path / "fleet.json", "-o", tmp_path / "card.md")
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "card.json").read_text())
    assert sorted(row["device"] for row in card["latency"]) == ["alpha", "beta"]


def test_card_commands_name_the_runtime_item_that_ran(results: dict[str, Path], tmp_path: Path) -> None:
    """OpenVINO in bf16 is measured again with --runtime openvino:bf16, never plain openvino (fp32)."""
    bench = json.loads((results["root"] / "bench.json").read_text())
    for c in bench["cases"]:
        c.update(runtime="openvino", precision="bf16")
    (tmp_path / "bf16.json").write_text(json.dumps(bench))
    r = run("card", tmp_path / "bf16.json", "-o", tmp_path / "card.md")
    assert r.exit_code == 0, r.output
    latency = json.loads((tmp_path / "card.json").read_text())["latency"]
    assert latency and all(" --runtime openvino:bf16 " in row["command"] for row in latency), latency


def test_card_shows_loadgen_scenarios_as_load(results: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("mlperf_loadgen", reason='needs MLPerf LoadGen: pip install "cnnkit[loadgen]"')
    r = run("bench", results["model"], "--scenario", "single-stream", "--min-time", "0.5", "--min-iterations", "32",
            "--samples", "32", "--out-dir", tmp_path / "lg")
    assert r.exit_code == 0, r.output
    r = run("card", results["bundle"], tmp_path / "lg" / "scenario.json", "-o", tmp_path / "card.md")
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "card.json").read_text())
    assert "load" not in {m["section"] for m in card["missing"]}
    row = card["load"][0]
    assert row["scenario"] == "single-stream" and row["images_per_s"] > 0 and row["percentile"] == 90
    assert "## Load: MLPerf LoadGen scenarios" in (tmp_path / "card.md").read_text()
