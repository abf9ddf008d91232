"""Print the Markdown options table of a cnnkit command, as docs/commands/<command>.md holds it.

    python scripts/docs_options.py eval          # paste under "## Options" in docs/commands/eval.md

tests/test_docs.py fails when a command has an option its page does not name; this prints the current
table from the command's own definitions (help text, type, default, environment variable).
"""

from __future__ import annotations

import argparse
import enum
import sys

import typer
from typer.core import TyperArgument, TyperOption

from cnnkit.cli.app import app

# The preprocessing options are one row: docs/concepts/data.md explains them once.
PREPROCESS = ("--preprocess", "--scale", "--mean", "--std", "--channel-order", "--crop-fraction")
PREPROCESS_ROW = (
    "| " + ", ".join(f"`{flag}`" for flag in PREPROCESS) + " | how the model wants its pixels: a preset (raw, unit, "
    "tf, torch, caffe) or explicit values. Default: the record in the model's metadata, else raw. See [the "
    "preprocessing record](../concepts/data.md#preprocessing-is-data) |"
)
# Help for options whose definition has none.
FALLBACK_HELP = {
    "--provider": "ONNX Runtime execution provider: cpu, cuda, tensorrt, any provider this onnxruntime lists, or a "
                  "plugin's ([sessions](../concepts/sessions.md)).",
    "--allow-fallback": "Run on the CPU if the provider does not load, and say so.",
    "--data-dir": "Dataset files, or a folder of images ([data](../concepts/data.md)).",
    "--epochs": "Training epochs (early stopping may end sooner).",
    "--seed": "Random seed.",
    "--spec": "Preset name or spec .toml file.",
    "--execution-mode": "ONNX Runtime's execution mode (parallel uses --inter-op-threads).",
    "--optimizer": "Training optimizer.",
    "--title": "The report's title.",
    "--input-name": "Name of the graph's input.",
    "--output-name": "Name of the graph's output.",
    "--mode": "dynamic INT8, static INT8 (calibrated) or FP16.",
    "--activation-type": "Static INT8: activation type (u8s8 or s8s8).",
    "--calibration-method": "Static INT8: how activation ranges are calibrated.",
}
FALLBACK_HELP_BY_COMMAND = {("train", "--batch-size"): "Training batch size.",
                            ("eval", "--batch-size"): "Images per inference batch."}
METAVARS = {"str": "TEXT", "int": "N", "float": "X", "Path": "PATH"}


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("\\[", "[").replace("|", "\\|").strip()


def _option_row(command: str, option: TyperOption) -> str:
    annotation = option.type_descriptor.annotation
    if option.metavar:  # the option names its own
        metavar = option.metavar
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        metavar = "|".join(str(member.value).lower() for member in annotation)
    elif option.is_flag:
        metavar = ""
    else:
        metavar = METAVARS.get(getattr(annotation, "__name__", ""), "KEY=VALUE")
    flag = option.opts[0]
    text = option.help or FALLBACK_HELP_BY_COMMAND.get((command, flag)) or FALLBACK_HELP.get(flag, "")
    extra = [f"env `{option.envvar}`"] if option.envvar else []
    default = option.default.value if isinstance(option.default, enum.Enum) else option.default
    if option.show_default is not False and not option.is_flag and default not in (None, "", ()):
        extra.append(f"default `{str(default).lower() if isinstance(option.default, enum.Enum) else default}`")
    if extra:
        text = f"{text} ({'; '.join(extra)})"
    names = f"`{', '.join(option.opts + option.secondary_opts)}`" + (f" `{metavar}`" if metavar else "")
    return f"| {_cell(names)} | {_cell(text)} |"


def options_table(command: str) -> str:
    """The Markdown table of ``command``'s arguments and options."""
    commands = typer.main.get_command(app).commands
    if command not in commands:
        raise SystemExit(f"no command {command!r}; commands: {', '.join(commands)}")
    rows = ["| argument or option | meaning |", "| --- | --- |"]
    preprocess_done = False
    for param in commands[command].params:
        if isinstance(param, TyperArgument):
            rows.append(f"| `{param.name.upper()}{'...' if param.nargs == -1 else ''}` | {_cell(param.help or '')} |")
        elif isinstance(param, TyperOption) and param.name != "help":
            if param.opts[0] in PREPROCESS:
                if not preprocess_done:
                    rows.append(PREPROCESS_ROW)
                    preprocess_done = True
            else:
                rows.append(_option_row(command, param))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", help="a cnnkit command, e.g. eval")
    print(options_table(parser.parse_args().command))


if __name__ == "__main__":
    sys.exit(main())
