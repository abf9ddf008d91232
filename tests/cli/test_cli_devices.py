"""Device comparison without Ray: bench results of several machines (a CI matrix's artifacts) in one report."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli_foundation import run
from tests.imaging import tiny_classifier

QUICK = ("--batch-sizes", "1,4", "--warmup", "1", "--min-time", "0", "--min-iterations", "5")


def test_report_compares_devices_from_ci_artifact_folders(tmp_path: Path) -> None:
    """Two real bench runs, laid out as actions/download-artifact does (one folder per matrix job)."""
    model = tiny_classifier(tmp_path / "tiny.onnx")
    for job, threads in (("ubuntu-x86", "1"), ("ubuntu-x86-2t", "2")):
        (tmp_path / "artifacts" / job).mkdir(parents=True)
        r = run("bench", model, *QUICK, "--threads", threads, "--json", tmp_path / "artifacts" / job / "bench.json")
        assert r.exit_code == 0, r.output
    r = run("report", tmp_path / "artifacts" / "ubuntu-x86" / "bench.json",
            tmp_path / "artifacts" / "ubuntu-x86-2t" / "bench.json", "-o", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Devices" in md and "Best device per batch size" in md
    section = md[md.index("## Devices"):]
    for job in ("ubuntu-x86", "ubuntu-x86-2t"):
        assert f"| {job} | tiny.onnx | onnxruntime |" in section
    best = section[section.index("Best device per batch size"):].split("\n\n")[1]
    assert best.count("\n") == 3  # header, rule, batch 1, batch 4
    results = {job: json.loads((tmp_path / "artifacts" / job / "bench.json").read_text()) for job in ("ubuntu-x86", "ubuntu-x86-2t")}
    for line in best.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        batch, winner = int(cells[3]), cells[4]
        rate = {j: next(c["stats"]["images_per_s"] for c in d["cases"] if c["batch_size"] == batch) for j, d in results.items()}
        assert winner == max(rate, key=rate.get)
    assert (tmp_path / "rep" / "device_latency.png").stat().st_size > 0
    assert (tmp_path / "rep" / "device_throughput.png").stat().st_size > 0


def test_results_of_one_folder_are_not_devices(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx")
    for name in ("a.json", "b.json"):
        assert run("bench", model, *QUICK, "--json", tmp_path / name).exit_code == 0
    r = run("report", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert "## Devices" not in (tmp_path / "rep" / "report.md").read_text()
    assert not (tmp_path / "rep" / "device_latency.png").exists()


def _fleet(entries: list[tuple[str, dict]], missing: tuple = ()) -> dict:
    """A fleet result around real bench results (what --engine ray writes: tests/distributed/test_fleet.py)."""
    return {"schema": "cnnkit.fleet-bench/1", "created": "2026-01-01T00:00:00+00:00", "selector": "all",
            "entries": [{"device": d, "node_id": f"{i:056x}", "hostname": d, "labels": {"device": d}, "result": r}
                        for i, (d, r) in enumerate(entries)], "missing": list(missing), "engine": {}}


def test_compare_works_device_by_device(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx")
    runs = []
    for i in range(3):
        assert run("bench", model, *QUICK, "--json", tmp_path / f"b{i}.json").exit_code == 0
        runs.append(json.loads((tmp_path / f"b{i}.json").read_text()))
    (tmp_path / "old.json").write_text(json.dumps(_fleet([("alpha", runs[0]), ("beta", runs[1])])))
    gone = {"device": "beta", "node_id": "ff" * 28, "reason": "the node died during the benchmark (NodeDiedError)"}
    (tmp_path / "new.json").write_text(json.dumps(_fleet([("alpha", runs[2])], (gone,))))
    r = run("compare", tmp_path / "old.json", tmp_path / "new.json", "--max-latency-regression", "1000%",
            "--json", tmp_path / "cmp.json")
    assert r.exit_code == 0, r.output
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert sorted(c["key"] for c in cmp["latency"]) == [f"alpha | tiny.onnx | CPUExecutionProvider | batch {b}"
                                                        for b in (1, 4)]
    assert len(cmp["unmatched"]) == 2 and all(u.startswith("beta | ") for u in cmp["unmatched"])
    assert any("beta is missing from" in n for n in cmp["notes"])
