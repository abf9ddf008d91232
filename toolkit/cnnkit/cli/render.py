"""Shared rendering helpers for the CLI (numbers stay numbers until here)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console

# Piped output (CI logs, files) gets a fixed, wide layout instead of Rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
# Notices stay on one line each, so scripts can grep them.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON.
    print(json.dumps(data, indent=2))


def notice(message: str) -> None:
    err_console.print(f"[yellow]note:[/] {message}")


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(d) for d in shape)


@contextlib.contextmanager
def image_progress(description: str = "images") -> Iterator[tuple[Any, Any]]:
    """A progress bar on stderr with done/total and images per second: ``with image_progress() as (bar, task)``."""
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class _Count(ProgressColumn):
        def render(self, task: Any) -> Text:
            rate = f"  {task.speed:,.0f} images/s" if task.speed else ""
            total = f"/{task.total:,.0f}" if task.total else ""
            return Text(f"{task.completed:,.0f}{total}{rate}")

    with Progress(TextColumn("{task.description}"), BarColumn(), _Count(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        yield bar, bar.add_task(description, total=None)
