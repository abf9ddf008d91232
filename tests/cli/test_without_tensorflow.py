"""The inference side works on an existing .onnx with no TensorFlow: an edge box should not need it."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# Importing any of these raises ImportError in the child, as on a machine without the training stack.
_BLOCK = "import sys\nfor m in ('tensorflow', 'keras', 'tf2onnx'):\n    sys.modules[m] = None\n"


def _cnnkit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    code = _BLOCK + f"sys.argv = ['cnnkit', *{list(args)!r}]\nfrom cnnkit.cli.app import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_inference_commands_without_tensorflow(exported_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    from tests.imaging import mnist_digits

    m = str(exported_model)
    Image.fromarray(mnist_digits(1)[0][0]).save(tmp_path / "digit.png")
    for args in (
        ("predict", m, str(tmp_path / "digit.png"), "--json", "-"),
        ("bench", m, "--batch-sizes", "1,2", "--min-time", "0", "--min-iterations", "3"),
        ("eval", m, "--dataset", "digits", "--limit", "50"),
        ("parity", m, m, "--dataset", "digits", "--samples", "20"),
        ("quantize", m, "-o", str(tmp_path / "q.onnx"), "--dataset", "digits", "--max-accuracy-drop", "5"),
        ("doctor",),
    ):
        r = _cnnkit(tmp_path, *args)
        assert r.returncode == 0, (args, r.stderr[-1500:])
    # The training side says what to install instead of failing obscurely.
    r = _cnnkit(tmp_path, "train", "--dataset", "digits", "--epochs", "1")
    assert r.returncode == 1 and "pip install 'cnnkit[train]'" in r.stderr
