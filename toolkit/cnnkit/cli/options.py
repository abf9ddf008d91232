"""Option parsers shared by several commands."""

from __future__ import annotations

import typer


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,7,64"`` -> ``(1, 7, 64)``; anything else is a usage error naming the bad item."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise typer.BadParameter(f"'{item}' is not a number (expected e.g. 1,8,64)") from None
        if value <= 0:
            raise typer.BadParameter(f"batch size must be positive, got {value}")
        sizes.append(value)
    if not sizes:
        raise typer.BadParameter("no batch size given")
    return tuple(sizes)
