"""Every table and every --help at 80 columns, run in a real pseudo-terminal of that size: no line wider than
the terminal, no figure cut to '…', no verdict column squeezed to nothing; piped output honours $COLUMNS.

Models are built with onnx.helper and data are the tiny IDX sets of tests/conftest.py; the .keras summary needs
a trained model (marked integration).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.cells import cell_len

from cnnkit.cli.app import app
from tests.conftest import make_idx_dir
from tests.faults.models import tiny_cnn

COMMANDS = tuple(info.name for info in app.registered_commands)
# Colours are dropped; any other control sequence (cursor moves, line erases of a progress bar) starts a new run
# of text, which must fit on its own.
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-ln-z]|\x1b\][^\x07]*\x07|\r")
_CUT_FIGURE = re.compile(r"\d…|…\d|\.…")


def in_terminal(*args: object, columns: int = 80) -> tuple[int, list[str]]:
    """Run ``cnnkit ARGS`` with stdin, stdout and stderr on a pseudo-terminal ``columns`` wide; its lines."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")} | {"TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", *map(str, args)], stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=600)
    text = _COLOUR.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")
    return code, [run for line in text.split("\n") for run in _CONTROL.split(line)]


def assert_fits(lines: list[str], columns: int = 80) -> str:
    wide = [line for line in lines if cell_len(line) > columns]
    assert not wide, "\n".join(wide)
    cut = [line for line in lines if _CUT_FIGURE.search(line)]
    assert not cut, "\n".join(cut)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An FP32 model, its dynamic INT8 variant, a labelled IDX set, and two bench and two eval results."""
    folder = tmp_path_factory.mktemp("terminal")
    env = os.environ | {"CNNKIT_OFFLINE": "1"}
    made = {"fp32": tiny_cnn(folder / "model.onnx"), "data": make_idx_dir(folder / "mnist", n_train=60, n_test=30),
            "int8": folder / "int8.onnx"}

    def cnnkit(*args: object) -> None:
        done = subprocess.run([sys.executable, "-m", "cnnkit", *map(str, args)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr

    cnnkit("quantize", made["fp32"], "-o", made["int8"], "--mode", "dynamic", "--data-dir", made["data"])
    for i in (1, 2):
        made[f"bench{i}"] = folder / f"bench{i}.json"
        cnnkit("bench", made["fp32"], made["int8"], "--batch-sizes", "1,8", "--min-time", "0.1", "--json", made[f"bench{i}"])
        made[f"eval{i}"] = folder / f"eval{i}.json"
        cnnkit("eval", made["fp32"], made["int8"], "--data-dir", made["data"], "--json", made[f"eval{i}"])
    return made


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_fits_80_columns_with_every_option_name_whole(command: str) -> None:
    code, lines = in_terminal(*([command] if command else []), "--help")
    assert code == 0
    text = assert_fits(lines)
    assert "…" not in text
    if command == "parity":
        assert "--max-accuracy-drop" in text
    if command == "quantize":
        assert "--calibration-samples" in text
    if not command:
        for name in COMMANDS:
            assert re.search(rf"^  {name} +\S.*(?<!\.\.\.)$", text, re.M), name  # its one-line help whole, not cut to '...'


def test_summary_of_onnx_and_spec_fit(models: dict[str, Path]) -> None:
    code, lines = in_terminal("summary", models["fp32"])
    assert code == 0
    text = assert_fits(lines)
    assert "24.3k" in text and "99.8 %" in text
    code, lines = in_terminal("summary", "mnist-cnn")
    assert code == 0
    text = assert_fits(lines)
    assert text.count("784 px 100.0 %") == 3  # the figure whole, once per dense layer


def test_parity_table_fits_with_every_figure_and_verdict(models: dict[str, Path], tmp_path: Path) -> None:
    code, lines = in_terminal("parity", models["fp32"], models["int8"], "--data-dir", models["data"],
                              "--json", tmp_path / "p.json")
    assert code == 0
    text = assert_fits(lines)
    result = json.loads((tmp_path / "p.json").read_text())
    rows = [line for line in lines if re.match(r"^\s*(1|7|64)\s+\d", line)]
    assert len(rows) == 3 and all(line.split()[-1] == "pass" for line in rows), text
    for d in result["outputs"]:
        assert f"{d['max_abs']:.3g}" in text


def test_eval_tables_fit(models: dict[str, Path]) -> None:
    code, lines = in_terminal("eval", models["fp32"], models["int8"], "--data-dir", models["data"], "--confusion")
    assert code == 0
    text = assert_fits(lines)
    assert "agrees" in text and "with first" in text and text.count("100.00 %") >= 2
    assert "confusion matrix of int8.onnx" in text


def test_eval_at_40_columns_splits_or_stacks_the_tables_never_cuts(models: dict[str, Path]) -> None:
    code, lines = in_terminal("eval", models["fp32"], models["int8"], "--data-dir", models["data"], columns=40)
    assert code == 0
    text = assert_fits(lines, 40)
    assert text.count("100.00 %") >= 2 and "int8-dynamic" in text


def test_quantize_auto_table_fits_with_every_verdict(models: dict[str, Path], tmp_path: Path) -> None:
    code, lines = in_terminal("quantize", models["fp32"], "-o", tmp_path / "auto.onnx", "--auto", "--data-dir",
                              models["data"], "--batch-size", "8", "--json", tmp_path / "auto.json")
    assert code == 0
    text = assert_fits(lines)
    result = json.loads((tmp_path / "auto.json").read_text())
    squashed = " ".join(text.split())
    for candidate in result["candidates"]:
        assert candidate["name"] in text
        assert " ".join(candidate["verdict"].split()) in squashed  # the verdict whole, maybe wrapped


@pytest.mark.parametrize("kind", ["bench", "eval"])
def test_compare_table_fits_with_every_verdict(models: dict[str, Path], tmp_path: Path, kind: str) -> None:
    code, lines = in_terminal("compare", models[f"{kind}1"], models[f"{kind}2"], "--max-latency-regression", "1000%",
                              "--json", tmp_path / "c.json")
    assert code == 0
    text = assert_fits(lines)
    result = json.loads((tmp_path / "c.json").read_text())
    rows = result["latency"] if kind == "bench" else result["accuracy"]
    assert rows
    verdicts = re.findall(r"\b(regression|inconclusive|improvement|unchanged|ok)\s*$", text, re.M)
    assert len(verdicts) == len(rows), text


def test_bench_recommend_fits(models: dict[str, Path]) -> None:
    code, lines = in_terminal("bench", models["fp32"], "--recommend", "--runtime", "onnxruntime", "--batch-sizes", "1",
                              "--min-time", "0.1", "--data-dir", models["data"])
    assert code == 0
    text = assert_fits(lines)
    assert "reproduce:" in text and "default p50" in text


@pytest.mark.integration
def test_summary_of_a_keras_model_fits(trained_model: Path) -> None:
    code, lines = in_terminal("summary", trained_model)
    assert code == 0
    text = assert_fits(lines)
    assert "total parameters: 93,322" in text


def test_piped_output_honours_columns(models: dict[str, Path]) -> None:
    def piped(*args: object, columns: str | None) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | ({"COLUMNS": columns} if columns else {})
        done = subprocess.run([sys.executable, "-m", "cnnkit", *map(str, args)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    wide = piped("summary", models["fp32"], columns=None)
    assert max(map(cell_len, wide)) > 60  # piped without $COLUMNS: the wide layout
    assert_fits(piped("summary", models["fp32"], columns="60"), 60)
    assert_fits(piped("eval", models["fp32"], models["int8"], "--data-dir", models["data"], columns="60"), 60)
    assert_fits(piped("bench", "--help", columns="60"), 60)
    assert_fits(piped("summary", models["fp32"], columns="10"), 40)  # a sane minimum
