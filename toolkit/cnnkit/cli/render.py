"""Shared rendering helpers for the CLI (numbers stay numbers until here)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from cnnkit.finite import number  # noqa: F401 (re-exported for the commands)


class _Console(Console):
    """Rich exits silently on a closed pipe; cnnkit reports it (cli/app.py) and a pipeline keeps recording."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(32, "standard output was closed")


# Piped output (CI logs, files) gets a fixed, wide layout instead of Rich's 80-column default.
console = _Console(highlight=False, width=None if sys.stdout.isatty() else 140)
# Notices stay on one line each, so scripts can grep them.
err_console = _Console(stderr=True, highlight=False, soft_wrap=True)


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


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(d) for d in shape)


@contextlib.contextmanager
def image_progress(description: str = "images") -> Iterator[tuple[Any, Any]]:
    """A progress bar on stderr with done/total and images per second: ``with image_progress() as (bar, task)``."""
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class _Count(ProgressColumn):
        def render(self, task: Any) -> Text:
            rate = f"  {task.speed:,.0f} images/s" if task.speed else ""
            total = f"/{task.total:,.0f}" if task.total else ""
            return Text(f"{task.completed:,.0f}{total}{rate}")

    with Progress(TextColumn("{task.description}"), BarColumn(), _Count(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        yield bar, bar.add_task(description, total=None)


def rich_table(table: Any) -> Any:
    """A neutral :class:`cnnkit.report.sections.Table` as a Rich table: no box, no padding at the edges (what
    fits 80 columns), numbers right-aligned."""
    from rich.markup import escape
    from rich.table import Table

    out = Table(title_justify="left", pad_edge=False, box=None, header_style="bold")
    for i, header in enumerate(table.headers):
        out.add_column(escape(header), justify="left" if table.aligned_left(i) else "right", no_wrap=True)
    for row in table.rows:
        out.add_row(*(escape(cell) for cell in row))
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
        console.print(rich_table(table))
    for note in section.notes:
        word, _, rest = note.partition(": ")
        warns = word in ("NOISY", "note", "differs", "only in one result")
        console.print(f"[yellow]{word}:[/] {escape(rest)}" if warns else f"  {escape(note)}")
    for what, command in section.commands:  # whole, for copying
        console.print(f"  {escape(what)}, reproduce: {escape(command)}", soft_wrap=True)
