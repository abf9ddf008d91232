"""Shared rendering helpers for the CLI (numbers stay numbers until here)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from cnnkit.finite import number  # noqa: F401 (re-exported for the commands)


class _Console(Console):
    """Rich exits silently on a closed pipe; cnnkit reports it (cli/app.py) and a pipeline keeps recording."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(32, "standard output was closed")


MIN_WIDTH = 40  # narrower than this, even the one-block-per-row layout is unreadable
PIPED_WIDTH = 140  # piped output (CI logs, files) without $COLUMNS: wide, instead of Rich's 80-column default


def output_width(is_terminal: bool, environ: Mapping[str, str] = os.environ) -> int | None:
    """The width to lay tables out for: ``$COLUMNS`` where set (at least ``MIN_WIDTH``), else the terminal's
    (``None``: Rich asks it), else ``PIPED_WIDTH``."""
    columns = environ.get("COLUMNS", "").strip()
    if columns.isdigit():
        return max(int(columns), MIN_WIDTH)
    return None if is_terminal else PIPED_WIDTH


console = _Console(highlight=False, width=output_width(sys.stdout.isatty()))
# Piped, notices stay on one line each so that scripts can grep them; on a terminal they wrap at its width.
err_console = _Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty(),
                       width=output_width(sys.stderr.isatty()))


def print_json(data: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON.
    print(json.dumps(data, indent=2, allow_nan=False))


DATASET_HELP = ("mnist, fashion_mnist or digits. Default: the dataset the model's metadata names; "
                "else MNIST where it can be had, else digits (with a note).")
JSON_HELP = "Write the result as JSON to this file ('-': to stdout, instead of the tables)."


def json_to_stdout(target: Path | None) -> bool:
    """``--json -``: the JSON is the command's whole stdout, so the tables are left out."""
    return target is not None and str(target) == "-"


def check_json_target(target: Path | None, force: bool) -> None:
    """Before any work: a ``--json`` file that exists (without ``--force``) or cannot be written is refused."""
    if target is not None and not json_to_stdout(target):
        from cnnkit.io import check_writable

        check_writable(target, force)


def emit_json(target: Path | None, data: Any, force: bool) -> None:
    """Write ``data`` where ``--json`` says: a file (atomically, then "wrote FILE") or stdout (``-``)."""
    if target is None:
        return
    if json_to_stdout(target):
        print_json(data)
        return
    from cnnkit.io import write_json_atomic

    write_json_atomic(target, data, force=force)
    console.print(f"wrote {target}")


def notice(message: str) -> None:
    err_console.print(f"[yellow]note:[/] {message}")


def status(message: str) -> None:
    """What a step that takes seconds (loading TensorFlow, tracing, converting) is doing, said as it starts: a dim
    line on stderr where a person watches it (a terminal). Piped stderr (scripts, CI) is left to results and
    one-line errors."""
    from rich.markup import escape

    if err_console.is_terminal:
        err_console.print(f"[dim]{escape(message)}[/]", highlight=False)


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(d) for d in shape)


@contextlib.contextmanager
def image_progress(description: str = "images") -> Iterator[tuple[Any, Any]]:
    """A progress bar on stderr with done/total and images per second: ``with image_progress() as (bar, task)``."""
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.table import Column
    from rich.text import Text

    class _Count(ProgressColumn):
        def render(self, task: Any) -> Text:
            rate = f"  {task.speed:,.0f} images/s" if task.speed else ""
            total = f"/{task.total:,.0f}" if task.total else ""
            return Text(f"{task.completed:,.0f}{total}{rate}")

    # The counts stay whole; on a narrow terminal the bar shrinks and the description folds.
    with Progress(TextColumn("{task.description}", table_column=Column(overflow="fold")),
                  BarColumn(bar_width=max(5, min(40, err_console.width - 50))), _Count(table_column=Column(no_wrap=True)),
                  TimeElapsedColumn(table_column=Column(no_wrap=True)), console=err_console, transient=True) as bar:
        yield bar, bar.add_task(description, total=None)


# --- tables that fit the terminal ---------------------------------------------------------------------------
# Figures are never cut: their columns are no_wrap, text columns fold. A table too wide for the terminal is
# split into several (the key columns repeated in each); where even that cannot fit, each row becomes a block
# of "column: value" lines.

WORD_MAX = 40  # a text column keeps its longest word whole up to this many cells (a longer one, e.g. a path, folds)


def new_table(title: str | None = None) -> Any:
    """A table in cnnkit's style (bench's): no box, a bold header, two spaces between columns."""
    from rich.table import Table

    return Table(title=title, title_justify="left", pad_edge=False, box=None, header_style="bold")


def figure_column(table: Any, header: str, justify: str = "right") -> None:
    """A column of figures: never wrapped, never cut (``print_table`` splits the table instead)."""
    table.add_column(header, justify=justify, no_wrap=True)


def text_column(table: Any, header: str, justify: str = "left") -> None:
    """A column of names or verdicts: wraps at spaces and folds a long word, never cuts it."""
    table.add_column(header, justify=justify, overflow="fold")


def _fits(table: Any, width: int) -> bool:
    """Would Rich lay ``table`` out in ``width`` cells without cutting a figure or squeezing a text column?"""
    # Rich's own arithmetic (Table.__rich_console__): the widths it would give, against what each column needs.
    options = console.options.update_width(max(1, width - table._extra_width))
    widths = table._calculate_column_widths(console, options)
    for column, got in zip(table.columns, widths, strict=True):
        need = table._measure_column(console, options, column)
        pad = table._get_padding_width(column._index)
        wanted = need.maximum if column.no_wrap else min(need.minimum, WORD_MAX + pad)
        if got < wanted:
            return False
    return sum(widths) + table._extra_width <= width


def _subtable(table: Any, columns: list[Any]) -> Any:
    import copy

    part = copy.copy(table)
    part.title = None
    part.columns = []
    for index, column in enumerate(columns):
        column = copy.copy(column)
        column._index = index
        part.columns.append(column)
    return part


def _cell_text(cell: Any) -> Any:
    from rich.text import Text

    return Text.from_markup(cell) if isinstance(cell, str) else cell if isinstance(cell, Text) else Text(str(cell))


def _print_blocks(table: Any, key: int) -> None:
    """One block per row: the key cells as its heading, then "column: value" lines."""
    from rich.text import Text

    keys, rest = table.columns[:key], table.columns[key:]
    for row in range(table.row_count):
        heading = Text(" ").join(_cell_text(c._cells[row]) for c in keys)
        heading.stylize("bold")
        console.print(heading)
        for column in rest:
            header = " ".join(str(column.header).split())
            console.print(Text(f"  {header}: ") + _cell_text(column._cells[row]))


def print_table(table: Any, key: int = 1) -> None:
    """Print ``table`` whole at the console's width: as it is where it fits; else split into tables that each
    repeat the first ``key`` columns; else one block of lines per row."""
    width = console.width
    if table.title:  # the whole width for it, not the table's (Rich would wrap it at the table's edge)
        console.print(table.title)
    keys, rest = table.columns[:key], table.columns[key:]
    groups: list[list[Any]] = [[]]
    for column in rest:
        if groups[-1] and not _fits(_subtable(table, keys + groups[-1] + [column]), width):
            groups.append([])
        groups[-1].append(column)
    parts = [_subtable(table, keys + group) for group in groups]
    if not all(_fits(part, width) for part in parts):
        _print_blocks(table, key)
        return
    for i, part in enumerate(parts):
        if i:
            console.print()
        console.print(part)


def command_lines(command: str, indent: str = "  ") -> str:
    """A shell command as lines that fit the console, joined by `` \\`` continuations: it still copies and
    pastes as one command."""
    width = console.width
    lines: list[str] = []
    line = indent
    for word in (shlex.quote(w) for w in shlex.split(command)):
        if line.strip() and len(line) + 1 + len(word) + 2 > width:
            lines.append(line + " \\")
            line = indent + "    "
        line += ("" if not line.strip() else " ") + word
    return "\n".join([*lines, line])


def rich_table(table: Any) -> Any:
    """A neutral :class:`cnnkit.report.sections.Table` as a Rich table: no box, no padding at the edges (what
    fits 80 columns), numbers right-aligned; a verdict green where its row is good, red where bad."""
    from rich.markup import escape

    out = new_table()
    for i, header in enumerate(table.headers):  # left-aligned: names (fold); right-aligned: figures (never cut)
        (text_column if table.aligned_left(i) else figure_column)(out, escape(header))
    for r, row in enumerate(table.rows):
        cells = [escape(cell) for cell in row]
        outcome = table.outcomes[r] if r < len(table.outcomes) else None
        if table.verdict is not None and outcome is not None:
            colour = "green" if outcome else "red"
            cells[table.verdict] = f"[{colour}]{cells[table.verdict]}[/]"
        out.add_row(*cells)
    return out


def print_section(section: Any) -> None:
    """A neutral :class:`cnnkit.report.sections.Section` on the terminal: the title in bold with the intro in
    brackets, each table under its sub-heading and lines, then the notes (the warnings, "NOISY:", "note:",
    compare's "differs:" and "only in one result:", in yellow)."""
    from rich.markup import escape

    if section.title:
        console.print(f"\n[bold]{escape(section.title)}[/]" + (f" ({escape(section.intro)})" if section.intro else ""))
    elif section.intro:
        console.print(escape(section.intro))
    for table in section.tables:
        if table.title:
            console.print(escape(table.title))
        for line in table.lines:
            console.print(f"  {escape(line)}")
        print_table(rich_table(table))
    for note in section.notes:
        word, _, rest = note.partition(": ")
        warns = word in ("NOISY", "note", "differs", "only in one result")
        console.print(f"[yellow]{word}:[/] {escape(rest)}" if warns else f"  {escape(note)}")
    for what, command in section.commands:  # whole, for copying (shell continuations where it is long)
        console.print(f"  {escape(what)}, reproduce:")
        console.print(command_lines(command, indent="    "), soft_wrap=True, markup=False, highlight=False)
