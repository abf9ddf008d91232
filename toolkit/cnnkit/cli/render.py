"""Shared rendering helpers for the CLI (numbers stay numbers until here)."""

from __future__ import annotations

import json
import sys
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
