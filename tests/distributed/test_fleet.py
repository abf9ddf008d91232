"""bench --engine ray on a real two-node Ray cluster (ray.cluster_utils.Cluster): one entry per node, each with its
own environment; a node that dies mid-run is reported missing and the others kept; the devices render in report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli_foundation import run
from tests.imaging import tiny_classifier

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'cnnkit[ray]')")

QUICK = ("--batch-sizes", "1,4", "--warmup", "1", "--min-time", "0", "--min-iterations", "5")


@pytest.fixture(scope="module")
def two_nodes() -> object:
    """A head and a second node (1 CPU each), labelled device=alpha and device=beta. Stopped at the end."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "labels": {"device": "alpha"},
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, labels={"device": "beta"})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("fleet") / "tiny.onnx")


def test_fleet_bench_has_one_entry_per_node_and_renders_as_devices(two_nodes: object, model: Path,
                                                                   tmp_path: Path) -> None:
    r = run("bench", model, *QUICK, "--engine", "ray", "--nodes", "all", "--json", tmp_path / "fleet.json")
    assert r.exit_code == 0, r.output
    fleet = json.loads((tmp_path / "fleet.json").read_text())
    assert fleet["schema"] == "cnnkit.fleet-bench/1" and fleet["missing"] == []
    assert sorted(e["device"] for e in fleet["entries"]) == ["alpha", "beta"]
    assert len({e["node_id"] for e in fleet["entries"]}) == 2
    for e in fleet["entries"]:
        res = e["result"]
        assert res["schema"] == "cnnkit.bench/1" and res["environment"]["cpu"]["model"]
        assert [c["batch_size"] for c in res["cases"]] == [1, 4]
        assert all(c["model"] == str(model) and c["stats"]["count"] >= 5 for c in res["cases"])  # the user's path
    assert "alpha" in r.stdout and "beta" in r.stdout and "images/s" in r.stdout

    r = run("bench", model, *QUICK, "--engine", "ray", "--nodes", "device=beta", "--json", tmp_path / "beta.json")
    assert r.exit_code == 0, r.output
    assert [e["device"] for e in json.loads((tmp_path / "beta.json").read_text())["entries"]] == ["beta"]
    r = run("bench", model, *QUICK, "--engine", "ray", "--nodes", "device=gamma")
    assert r.exit_code == 1 and "no node of the cluster's 2 has that label" in r.stderr and "device=alpha" in r.stderr


def test_fleet_verify_has_one_row_per_node(two_nodes: object, tmp_path: Path) -> None:
    """cnnkit verify --engine ray: every node opens the bundle and verifies; one row per device, each its own fingerprint."""
    from tests.imaging import write_digit_folder
    from tests.onnx_graphs import tiny_classifier as graph_classifier

    model = graph_classifier(tmp_path / "m.onnx", batch="batch", hw=28, channels=1, classes=10)
    write_digit_folder(tmp_path / "digits", n=20)
    r = run("bundle", model, "--data-dir", tmp_path / "digits", "--samples", "16", "-o", tmp_path / "m.cnnkit")
    assert r.exit_code == 0, r.output
    r = run("verify", tmp_path / "m.cnnkit", "--engine", "ray", "--nodes", "all", "--json", tmp_path / "fleet.json")
    assert r.exit_code == 0, r.output
    fleet = json.loads((tmp_path / "fleet.json").read_text())
    assert fleet["schema"] == "cnnkit.fleet-verify/1" and fleet["passed"] is True
    assert [row["device"] for row in fleet["rows"]] == ["alpha", "beta"]
    for row in fleet["rows"]:
        assert row["result"]["passed"] and row["result"]["bundle"]["path"] == str(tmp_path / "m.cnnkit")
        assert row["result"]["environment"]["cpu"]["model"]
    assert "alpha" in r.stdout and "beta" in r.stdout and "VERIFY PASS on every node" in r.stdout
    from cnnkit.results.load import load_result

    assert len(load_result(tmp_path / "fleet.json", expect="cnnkit.fleet-verify/1").rows) == 2


def test_a_node_that_dies_is_missing_and_the_others_kept(two_nodes: object, model: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted fault: the task on the beta node kills that node's raylet. Runs last: the node stays dead."""
    from cnnkit.bench.config import BenchConfig
    from cnnkit.distributed.fleet import KILL_NODE_ENV, run_fleet_benchmark

    monkeypatch.setenv(KILL_NODE_ENV, "device=beta")
    config = BenchConfig((model,), batch_sizes=(1,), warmup=1, min_time_s=0.0, min_iterations=5)
    fleet = run_fleet_benchmark(config, "all").to_dict()
    assert [e["device"] for e in fleet["entries"]] == ["alpha"]
    assert [m["device"] for m in fleet["missing"]] == ["beta"]
    assert "died" in fleet["missing"][0]["reason"]
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))
    r = run("report", tmp_path / "fleet.json", "-o", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Devices" in md and "| alpha | tiny.onnx |" in md and "missing: **beta**" in md

