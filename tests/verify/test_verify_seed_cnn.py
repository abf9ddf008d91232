"""The seed CNN end to end: bundled with its Keras reference and .tflite, verified in a process without TensorFlow
on ONNX Runtime, OpenVINO and LiteRT; a planted weight change fails there and is named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# As on a device with the base install: importing the training stack fails in the child.
_BLOCK = "import sys\nfor m in ('tensorflow', 'keras', 'tf2onnx'):\n    sys.modules[m] = None\n"


def _cnnkit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    code = _BLOCK + f"sys.argv = ['cnnkit', *{list(args)!r}]\nfrom cnnkit.cli.app import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)


def test_seed_cnn_bundle_verifies_on_three_runtimes_without_tensorflow(trained_model: Path, exported_model: Path,
                                                                       tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("ai_edge_litert")
    import onnx
    from onnx import numpy_helper

    from cnnkit.export.tflite import TfliteExportConfig, export_tflite
    from cnnkit.verify.bundle import BundleConfig, build_bundle

    tflite = tmp_path / "model.tflite"
    export_tflite(TfliteExportConfig(trained_model, tflite))
    bundle = tmp_path / "seed.cnnkit"
    made = build_bundle(BundleConfig(model=exported_model, output=bundle, reference=trained_model, tflite=tflite,
                                     dataset="digits"))
    assert made.manifest.reference["kind"] == "keras" and made.manifest.has_tflite
    for runtime in ("onnxruntime", "openvino", "litert"):
        r = _cnnkit(tmp_path, "verify", str(bundle), "--runtime", runtime, "--json", f"{runtime}.json")
        assert r.returncode == 0, (runtime, r.stdout[-1500:], r.stderr[-1500:])
        result = json.loads((tmp_path / f"{runtime}.json").read_text())
        assert result["passed"] and result["runtime"]["runtime"] == runtime
    model = onnx.load(str(exported_model))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    for i, t in enumerate(model.graph.initializer):
        if t.name == conv.input[1]:
            w = numpy_helper.to_array(t).copy()
            w.flat[0] += 0.05
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, t.name))
    onnx.save(model, str(tmp_path / "changed.onnx"))
    r = _cnnkit(tmp_path, "verify", str(bundle), "--model", str(tmp_path / "changed.onnx"))
    assert r.returncode == 1 and "VERIFY FAIL" in r.stdout
    assert f"weight {conv.input[1]}: 1 of" in r.stderr
