"""Option parsers shared by several commands."""

from __future__ import annotations

from cnnkit.errors import CnnkitError


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,7,64"`` -> ``(1, 7, 64)``; anything else is a user error naming the bad item."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise CnnkitError(f"--batch-sizes: '{item}' is not a number", hint="e.g. --batch-sizes 1,8,64") from None
        if value <= 0:
            raise CnnkitError(f"--batch-sizes: batch size must be positive, got {value}", hint="e.g. --batch-sizes 1,8,64")
        sizes.append(value)
    if not sizes:
        raise CnnkitError("--batch-sizes: no batch size given", hint="e.g. --batch-sizes 1,8,64")
    return tuple(sizes)
