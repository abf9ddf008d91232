"""``cnnkit card RESULTS... -o card.md``: the deployment card, in Markdown and JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.render import console


def card_command(
    results: list[Path] = typer.Argument(..., help="Result files (--json of parity, eval, bench, quantize, verify; "
                                         "run folders) and the bundle (.cnnkit)."),
    output: Path = typer.Option(..., "-o", "--output", help="The card's Markdown file; its JSON (cnnkit.card/1) is "
                                "written beside it with the .json suffix."),
    title: str = typer.Option(None, "--title", help="The card's title. Default: 'Deployment card: MODEL'."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing card."),
) -> None:
    """Model identity, input contract, parity, accuracy, latency, memory, quantization and where it was verified."""
    from cnnkit.report.card import write_card

    card, md, js = write_card(results, output, title, force)
    filled = 10 - len(card.missing)
    console.print(f"wrote {md} and {js}: {filled} of 10 sections filled from {len(card.sources)} result(s)")
    for m in card.missing:
        console.print(f"missing: {m['section'].replace('_', ' ')} (fill with: {m['fill_with']})")
