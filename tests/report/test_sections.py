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
