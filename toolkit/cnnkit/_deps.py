"""Lazy imports of the heavy, optional libraries, with an actionable error when one is missing."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

from cnnkit.errors import CnnkitError, MissingDependencyError

_TRAIN_HINT = "install the training stack: pip install 'cnnkit[train]'"


def _require(module: str, hint: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{module} is not installed ({exc})", hint=hint) from None


class CapturedText:
    """What native code wrote to fd 2 inside :func:`capture_native_stderr` (set when the block ends)."""

    text: str = ""


@contextlib.contextmanager
def capture_native_stderr(replay_on_error: bool = True) -> Iterator[CapturedText]:
    """Hold back what native code (TensorFlow's absl logging, ONNX Runtime's logger) writes to fd 2.

    TensorFlow logs through absl before its log level is read, so environment variables cannot
    silence it. The text is kept in the yielded object. It is replayed only if the block fails with a
    bug (an exception that is neither a user error nor Ctrl-C/SIGTERM), so a real diagnostic is not lost
    and a one-line error stays one line. With ``$CNNKIT_DEBUG`` set nothing is held back.
    """
    captured = CapturedText()
    if os.environ.get("CNNKIT_DEBUG", "") not in ("", "0"):
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield captured
        except (CnnkitError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")
            if failed and replay_on_error:
                sys.stderr.write(captured.text)


def require_tensorflow() -> ModuleType:
    """Import TensorFlow quietly (its C++ start-up chatter is not for our users)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with capture_native_stderr():
        tf = _require("tensorflow", _TRAIN_HINT)
        tf.config.list_physical_devices()  # CUDA probing logs too; get it over with here
    return tf


def require_keras() -> ModuleType:
    require_tensorflow()
    return _require("keras", _TRAIN_HINT)


def require_tf2onnx() -> ModuleType:
    require_tensorflow()
    return _require("tf2onnx", _TRAIN_HINT)


def require_sklearn_datasets() -> ModuleType:
    return _require("sklearn.datasets", _TRAIN_HINT)


def require_onnxruntime() -> ModuleType:
    return _require(
        "onnxruntime",
        "install ONNX Runtime: pip install onnxruntime-gpu (Linux x86_64) or pip install onnxruntime",
    )


RAY_HINT = 'install Ray: pip install "cnnkit[ray]"'


def require_ray() -> ModuleType:
    """Ray (with Ray Data), for ``--engine ray``; missing, a one-line error naming the install command."""
    ray = _require("ray", RAY_HINT)
    _require("ray.data", RAY_HINT)
    return ray


LOADGEN_HINT = 'install MLPerf LoadGen: pip install "cnnkit[loadgen]"'


def require_loadgen() -> ModuleType:
    """MLPerf LoadGen (``mlcommons-loadgen``), for ``bench --scenario``; missing, a one-line error naming the extra."""
    return _require("mlperf_loadgen", LOADGEN_HINT)


_ABANDONED: list[str] = []  # native threads left running at Ctrl-C (see abandon_native_thread)


def abandon_native_thread(what: str) -> None:
    """Record a native thread left running because it cannot be stopped (LoadGen's test at Ctrl-C). Its C++
    ``std::thread`` would abort the process at exit (``terminate called``), so the CLI then leaves by ``os._exit``
    once its message is out and every half-written file is gone."""
    _ABANDONED.append(what)


def native_threads_abandoned() -> bool:
    return bool(_ABANDONED)
