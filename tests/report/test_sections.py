"""One section function per bench table, drawn for the terminal (Rich, 80 columns) and the report (Markdown)."""

import io
from pathlib import Path

from cnnkit.bench.result import BenchResult
from cnnkit.report.sections import (
    bench_sections,
    latency_section,
    recommendation_section,
    to_markdown,
)
from rich.console import Console

GOLDEN = Path(__file__).parents[1] / "golden" / "v0.1.0"


def _terminal(section, width: int = 80) -> str:
    from cnnkit.cli import render

    buf = io.StringIO()
    saved, render.console = render.console, Console(file=buf, width=width, highlight=False)
    try:
        render.print_section(section)
    finally:
        render.console = saved
    return buf.getvalue()


def test_the_terminal_and_the_report_show_the_same_rows() -> None:
    result = BenchResult.load(GOLDEN / "bench-recommend.json")
    for compact_section, full_section in zip(bench_sections([result], compact=True),
                                             bench_sections([result], compact=False), strict=True):
        md = "\n".join(to_markdown(full_section))
        term = _terminal(compact_section)
        assert len(compact_section.tables[0].rows) == len(full_section.tables[0].rows) > 0  # the same cases
        for row in (r for t in full_section.tables for r in t.rows):
            assert "| " + " | ".join(row) + " |" in md
        for row in (r for t in compact_section.tables for r in t.rows):  # every cell on the terminal, in one line
            assert any(all(cell in line for cell in row) for line in term.splitlines()), row
        table_lines = [line for line in term.splitlines() if "  " in line.strip()]
        assert table_lines and max(len(line) for line in table_lines) <= 80


def test_latency_flags_noise_once_per_case_and_the_report_says_why() -> None:
    result = BenchResult.load(GOLDEN / "bench.json")
    full = latency_section([result, result], compact=False)  # two files of the same model: rows kept apart
    noisy_rows = [r for r in full.tables[0].rows if r[-1] == "NOISY"]
    assert len(noisy_rows) == 2 * sum(1 for r in latency_section([result], False).tables[0].rows if r[-1] == "NOISY")
    assert sum(n.startswith("NOISY: ") for n in full.notes) == len(noisy_rows)
    assert "## Latency and throughput" in to_markdown(full)
    compact = latency_section([result], compact=True)
    assert compact.title == "" and compact.intro.endswith("--wide: every column")


def test_the_reproduce_command_copies_whole() -> None:
    result = BenchResult.load(GOLDEN / "bench-recommend.json")
    section = recommendation_section([result], compact=True)
    assert section is not None and section.commands
    term = _terminal(section)
    assert max(len(line) for line in term.splitlines()) <= 80
    pasted = " ".join(term.replace(" \\\n", " ").split())  # what a shell reads: the continuations joined
    for _, command in section.commands:
        assert " ".join(command.split()) in pasted  # whole, never cut, for copying
    assert all(f"`{command}`" in "\n".join(to_markdown(section)) for _, command in section.commands)


def test_compare_is_one_section_for_the_terminal_and_the_report() -> None:
    from cnnkit.report.sections import compare_section
    from cnnkit.results.load import load_result

    result = load_result(GOLDEN / "compare.json", expect="cnnkit.compare/1")
    full, compact = compare_section(result, compact=False), compare_section(result, compact=True)
    assert full.tables == compact.tables and len(full.tables[0].rows) == len(result.latency) > 0
    md = "\n".join(to_markdown(full))
    term = _terminal(compact, width=140)  # piped output's width (compare's rows do not fit 80 columns yet)
    for row in full.tables[0].rows:  # the same cells in the report and, in one line, on the terminal
        assert "| " + " | ".join(row) + " |" in md
        assert any(all(cell in line for cell in row) for line in term.splitlines()), (row, term)
    for key in result.unmatched:  # and the same notes
        assert f"- only in one result: {key}" in md and f"only in one result: {key}" in term


def test_eval_is_one_section_for_the_terminal_and_the_report() -> None:
    from cnnkit.report.sections import eval_section
    from cnnkit.results.load import load_result

    result = load_result(GOLDEN / "eval.json", expect="cnnkit.eval/1")
    full, compact = eval_section(result, compact=False), eval_section(result, compact=True)
    assert full.tables[0].rows == compact.tables[0].rows and len(full.tables[0].rows) == len(result.models) > 0
    md = "\n".join(to_markdown(full))
    assert md.startswith("## Accuracy") and f"{result.dataset['evaluated_samples']:,} test images" in md
    term = _terminal(compact)  # at 80 columns split into tables that repeat the model column
    for row in full.tables[0].rows:  # the same cells in the report and on the terminal, each beside its model
        assert "| " + " | ".join(row) + " |" in md
        lines = [line for line in term.splitlines() if line.startswith(row[0] + " ")]
        assert all(any(cell in line for line in lines) for cell in row[1:]), (row, term)


def _same_rows(full, compact, term: str, md: str) -> None:
    """Every row of every table in the report as it is, and on the terminal each cell on a line of its row's
    first cell (a table too wide for 80 columns is split into tables that repeat it; text may wrap)."""
    assert [t.rows for t in full.tables] == [t.rows for t in compact.tables]
    for table in full.tables:
        assert table.rows
        for row in table.rows:
            assert "| " + " | ".join(row) + " |" in md
            lines = [line for line in term.splitlines() if line.strip().startswith(row[0] + " ")]
            assert lines and all(any(cell in line for line in lines) for cell in row[1:] if " " not in cell), (row, term)
            assert all(" ".join(cell.split()) in " ".join(term.split()) for cell in row)  # maybe wrapped
    assert max(len(line) for line in term.splitlines()) <= 80


def test_parity_is_one_section_for_the_terminal_and_the_report() -> None:
    from cnnkit.report.sections import parity_section
    from cnnkit.results.load import load_result

    result = load_result(GOLDEN / "parity.json", expect="cnnkit.parity/1")
    full, compact = parity_section(result, compact=False), parity_section(result, compact=True)
    md = "\n".join(to_markdown(full))
    term = _terminal(compact)
    _same_rows(full, compact, term, md)
    assert len(full.tables[0].rows) == len(result.outputs) == 3
    assert md.startswith("## Parity (keras-onnx): PASS") and "### output probabilities" in md
    assert "output probabilities" in term and "max abs diff" in md and "|diff|" in term
    accuracy = "accuracy on 200 labelled images: reference 94.00 %, candidate 94.00 %"
    assert f"- {accuracy}" in md and accuracy in term


def test_a_parity_failure_shows_its_layers_and_verdicts_in_both() -> None:
    from dataclasses import replace

    from cnnkit.cli.render import rich_table
    from cnnkit.parity.layers import LayerDiff
    from cnnkit.report.sections import parity_section
    from cnnkit.results.load import load_result

    result = load_result(GOLDEN / "parity.json", expect="cnnkit.parity/1")
    bad = replace(result.outputs[1], passed=False, nonfinite_candidate=3)
    layers = (LayerDiff("conv1", "Conv2D", "model/conv1/Relu:0", "NHWC", (1, 26, 26, 8), 2e-7, 1.5, 1.3e-7, False),
              LayerDiff("conv2", "Conv2D", "model/conv2/Relu:0", "NHWC", (1, 11, 11, 16), 0.4, 2.0, 0.2, True),
              LayerDiff("flatten", "Flatten", None, "NC", (1, 1936), None, None, None, False))
    result = replace(result, passed=False, outputs=(result.outputs[0], bad, result.outputs[2]), layers=layers,
                     failures=("batch 7: candidate gives 3 non-finite value(s)",), divergence="conv2 (relative 0.2)")
    full, compact = parity_section(result, compact=False), parity_section(result, compact=True)
    md = "\n".join(to_markdown(full))
    term = _terminal(compact)
    _same_rows(full, compact, term, md)
    assert md.startswith("## Parity (keras-onnx): FAIL") and "### per layer (Keras output vs ONNX tensor)" in md
    assert "| 7 |" in md and "FAIL (3 NaN/Inf) |" in md and "FAIL (3 NaN/Inf)" in " ".join(term.split())
    assert "| conv2 | model/conv2/Relu:0 | NHWC | 1×11×11×16 | 0.4 | 0.2 | DIVERGES |" in md
    assert "| flatten | (none) | NC | 1×1936 |  |  | - |" in md
    assert "- fail: batch 7: candidate gives 3 non-finite value(s)" in md  # the terminal says these on stderr
    assert "- first divergent layer: conv2 (relative 0.2)" in md and "fail:" not in term
    # The verdicts' colours are the terminal formatter's: red where bad, green where good, none where neither.
    outputs, per_layer = (rich_table(t) for t in compact.tables)
    assert [c for c in outputs.columns[-1]._cells] == ["[green]pass[/]", "[red]FAIL (3 NaN/Inf)[/]", "[green]pass[/]"]
    assert [c for c in per_layer.columns[-1]._cells] == ["ok", "[red]DIVERGES[/]", "-"]


def test_quantize_auto_is_one_section_for_the_terminal_and_the_report() -> None:
    from dataclasses import replace

    from cnnkit.report.sections import auto_section
    from cnnkit.results.load import load_result

    result = load_result(GOLDEN / "quantize-auto.json", expect="cnnkit.quantize-auto/1")
    full, compact = auto_section(result, compact=False), auto_section(result, compact=True)
    md = "\n".join(to_markdown(full))
    term = _terminal(compact)  # at 80 columns split into tables that repeat the variant column
    _same_rows(full, compact, term, md)
    assert len(full.tables[0].rows) == len(result.candidates) == 7
    squashed = " ".join(term.split())
    for c in result.candidates:  # each verdict whole, maybe wrapped
        assert " ".join(c.verdict.split()) in squashed
    assert md.startswith(f"## Quantization (--auto)\n\n{result.summary}\n\n| variant | accuracy | Δ pp vs FP32 |")
    assert term.startswith("provider CPUExecutionProvider; accuracy budget 0.1 pp")
    # On unlabelled images the figure is top-1 agreement with FP32, and both say so.
    unlabelled = replace(result, dataset={**result.dataset, "metric": "top-1 agreement with FP32 (no labels)"})
    assert auto_section(unlabelled, compact=False).tables[0].headers[1] == "top-1 agreement with FP32"
    assert "top-1 agreement" in _terminal(auto_section(unlabelled, compact=True))
