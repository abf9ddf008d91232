"""The Typer CLI. Only this package knows about Typer: each command parses options into a config,
calls one library function and renders its result."""

import sys


def main() -> None:
    """The ``cnnkit`` console script and ``python -m cnnkit``.

    Importing the CLI takes a moment (seconds on a loaded machine); Ctrl-C then ends it as it would later,
    with one line and exit 130, not a traceback from inside an import.
    """
    try:
        from cnnkit.cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("cnnkit: interrupted\n")
        sys.exit(130)
    run()
