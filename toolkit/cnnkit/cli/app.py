"""The ``cnnkit`` command: one place maps exceptions to exit codes.

Exit codes: 0 success; 1 a user error (one line: what, which value, a hint) or a failed gate, a file system
that refuses an output (full, read-only, no permission, name too long) or a closed standard output;
2 a usage error (bad option, from Click); 3 a bug in cnnkit (traceback with ``--debug``); 130 Ctrl-C;
143 SIGTERM (outputs are cleaned up as for Ctrl-C).
"""

from __future__ import annotations

import errno
import inspect
import os
import signal
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from cnnkit import __version__
from cnnkit.errors import CnnkitError, shorten

EXIT_USER_ERROR, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 3, 130, 143
# OSErrors that name a user's file or folder problem, not a cnnkit bug.
_USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG,
                errno.ENOTDIR, errno.EISDIR, errno.ELOOP}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` removes its half-written files."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Terminated()


def _silence_stdout() -> None:
    """After the reader of stdout left: send the rest to /dev/null, so no flush at exit fails again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _say(line: str) -> None:
    try:
        typer.echo(line, err=True)
    except OSError:  # stderr closed too: the exit code is all that is left
        pass


def _debug_enabled(ctx: typer.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("CNNKIT_DEBUG", "") not in ("", "0")


class CnnkitGroup(TyperGroup):
    """Runs a subcommand and turns what it raises into one line and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a reader that left shows here, not as a stray message at exit
            return result
        except (typer.Exit, typer.Abort, typer.TyperException) as exc:  # Typer's own: usage errors exit 2
            if isinstance(exc, typer.BadParameter):
                _name_the_value(exc)
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                _silence_stdout()
            raise
        except CnnkitError as exc:
            if _debug_enabled(ctx):
                traceback.print_exc()
            typer.echo(f"cnnkit: error: {exc.one_line()}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as exc:
            what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            _say(f"cnnkit: {what}; nothing half-written was kept")
            raise typer.Exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED) from None
        except BrokenPipeError:  # `cnnkit ... | head`: the reader left before we were done
            _silence_stdout()
            _say("cnnkit: error: standard output was closed before cnnkit finished writing to it "
                 "(hint: the reader, e.g. `| head`, exited early; use --json FILE to keep the full result)")
            raise typer.Exit(EXIT_USER_ERROR) from None
        except OSError as exc:
            if exc.errno not in _USER_ERRNOS:
                _report_bug(ctx, exc)
            if _debug_enabled(ctx):
                traceback.print_exc()
            where = f"{exc.filename}: " if exc.filename else ""
            _say(f"cnnkit: error: {where}{os.strerror(exc.errno)}")
            raise typer.Exit(EXIT_USER_ERROR) from None
        except Exception as exc:  # noqa: BLE001 (the one place bugs are reported)
            _report_bug(ctx, exc)


def _name_the_value(exc: typer.BadParameter) -> None:
    """Typer checks types with pydantic, whose message ("Input should be a valid integer") leaves out the value."""
    cause = exc.__cause__
    errors = cause.errors() if callable(getattr(cause, "errors", None)) else None
    if not errors or "input" not in errors[0]:
        return
    kind = {"int_parsing": "a whole number", "float_parsing": "a number", "bool_parsing": "true or false"}
    wanted = kind.get(str(errors[0].get("type")))
    value = errors[0]["input"]
    exc.message = f"{value!r} is not {wanted}" if wanted else f"{exc.message.rstrip('.')} (got {value!r})"


def _report_bug(ctx: typer.Context, exc: BaseException) -> None:
    if _debug_enabled(ctx):
        traceback.print_exc()
        hint = ""
    else:
        hint = " (run with --debug for the traceback, and please report it)"
    detail = shorten(exc, 300)
    _say(f"cnnkit: internal error: {type(exc).__name__}: {detail}{hint}")
    raise typer.Exit(EXIT_BUG) from None


app = typer.Typer(
    cls=CnnkitGroup,
    name="cnnkit",
    help="ONNX-based inference and edge-benchmarking toolkit for image CNNs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help wraps at the terminal's width (and $COLUMNS) and never cuts an option name; Rich's
    # option panels cut names and help text to '…' at 80 columns.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = {"debug": debug}


def _register() -> None:
    # Command modules import only Typer and light cnnkit modules at import time.
    from cnnkit.cli import (
        bench, bundle, card, compare, doctor, eval, export, featuremaps, parity, pipeline, predict, quantize, report, summary,
        train, verify,
    )

    app.command("pipeline")(pipeline.pipeline_command)
    app.command("summary")(summary.summary_command)
    app.command("train")(train.train_command)
    app.command("export")(export.export_command)
    app.command("parity")(parity.parity_command)
    app.command("bench")(bench.bench_command)
    app.command("eval")(eval.eval_command)
    app.command("predict")(predict.predict_command)
    app.command("doctor")(doctor.doctor_command)
    app.command("quantize")(quantize.quantize_command)
    app.command("compare")(compare.compare_command)
    app.command("featuremaps")(featuremaps.featuremaps_command)
    app.command("report")(report.report_command)
    app.command("bundle")(bundle.bundle_command)
    app.command("verify")(verify.verify_command)
    app.command("card")(card.card_command)
    for info in app.registered_commands:
        _own_path_checks(info.callback)
        # One line each in `cnnkit --help`, whole: Click would cut the docstring's first sentence with "...".
        info.short_help = SHORT_HELP.get(info.name) or " ".join((info.callback.__doc__ or "").split(". ")[0].split())


SHORT_HELP = {
    "pipeline": "train, export, parity, quantize, eval, bench, report.",
    "summary": "Layers, shapes, parameters of a spec, .keras or .onnx.",
    "train": "Train the CNN of a spec on a dataset.",
    "export": "Export a .keras model to ONNX (or .tflite), checked.",
    "parity": "Is the exported model the same model? Exit 1 if not.",
    "bench": "Latency and images/s per model, runtime and batch.",
    "eval": "Accuracy of one or more models on labelled images.",
    "predict": "Top-k classes of images, with probabilities.",
    "doctor": "What is installed and what actually works.",
    "quantize": "INT8 or FP16 variant, checked against FP32.",
    "compare": "Regression gate between two results (noise-aware).",
    "featuremaps": "Activation maps of the conv layers as PNG grids.",
    "report": "Markdown, HTML, plots and CSV from results.",
    "bundle": "A model with golden inputs and outputs, for verify.",
    "verify": "Does this device compute what was validated?",
    "card": "The deployment card of a model, in Markdown and JSON.",
}


def _own_path_checks(command: Any) -> None:
    """Typer checks that every path argument is readable and, if not, stops with a usage error (exit 2), where a
    missing file is cnnkit's one-line error (exit 1): leave the check to cnnkit's loaders, which say it in one line."""
    for param in inspect.signature(command).parameters.values():
        if isinstance(param.default, typer.models.ParameterInfo):
            param.default.readable = False


_register()


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command (e.g. while parsing)
        typer.echo("cnnkit: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as exc:
        from cnnkit._deps import native_threads_abandoned

        if native_threads_abandoned():  # a native thread would abort the normal exit (see abandon_native_thread)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR)
        raise
