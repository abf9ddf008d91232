"""The Typer CLI. Only this package knows about Typer: each command parses options into a config,
calls one library function and renders its result."""
