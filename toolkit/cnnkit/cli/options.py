"""Option parsers shared by several commands."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer

from cnnkit.errors import CnnkitError


def parse_provider_options(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    """``["device_type=CPU", "precision=FP32"]`` -> pairs; an item without ``=`` is a user error naming it."""
    pairs = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CnnkitError(f"--provider-option: '{item}' is not KEY=VALUE", hint="e.g. --provider-option device_type=CPU")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def parse_positive_ints(text: str, option: str, what: str, example: str) -> tuple[int, ...]:
    """``"1,7,64"`` -> ``(1, 7, 64)``; anything else is a user error naming ``option`` and the bad item."""
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise CnnkitError(f"{option}: '{item}' is not a number", hint=f"e.g. {example}") from None
        if value <= 0:
            raise CnnkitError(f"{option}: {what} must be positive, got {value}", hint=f"e.g. {example}")
        values.append(value)
    if not values:
        raise CnnkitError(f"{option}: no {what} given", hint=f"e.g. {example}")
    return tuple(values)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,7,64"`` -> ``(1, 7, 64)``; anything else is a user error naming the bad item."""
    return parse_positive_ints(text, "--batch-sizes", "batch size", "--batch-sizes 1,8,64")


def parse_concurrency(text: str, cores: int) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4); ``"sweep"`` -> 1, 2, ... up to ``cores``."""
    if text.strip().lower() in ("sweep", "cores", "max"):
        return tuple(range(1, max(1, cores) + 1))
    levels = parse_positive_ints(text, "--concurrency", "requests in flight", "--concurrency 1,2 or --concurrency sweep")
    return tuple(dict.fromkeys(levels))


# --- preprocessing and images: the same options in every command that feeds images ----------------------

PREPROCESS_HELP = ("How the model wants its pixels: raw (0..255), unit ([0, 1]), tf ([-1, 1]), torch (ImageNet "
                   "mean/std, RGB) or caffe (BGR, ImageNet mean subtracted). Default: the record in the model's "
                   "metadata, else raw.")
preprocess_option = typer.Option(None, "--preprocess", help=PREPROCESS_HELP)
scale_option = typer.Option(None, "--scale", help="Multiply pixels 0..255 by this (before --mean/--std), e.g. 0.00392.")
mean_option = typer.Option(None, "--mean", help="Subtracted after --scale: one value or one per channel, e.g. 0.485,0.456,0.406.")
std_option = typer.Option(None, "--std", help="Divided after --mean: one value or one per channel, e.g. 0.229,0.224,0.225.")
channel_order_option = typer.Option(None, "--channel-order", help="rgb or bgr: the channel order a colour model takes.")
crop_fraction_option = typer.Option(None, "--crop-fraction", help="Keep the aspect ratio: resize to size/F, centre-crop (e.g. 0.875). Default: stretch.")
skip_bad_images_option = typer.Option(False, "--skip-bad-images", help="Skip empty, corrupt or unreadable images (counted in the result) instead of stopping.")
labels_option = typer.Option(None, "--labels", help="Class names, one per line in the model's output order (default: the model's metadata).")


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.485,0.456,0.406"`` -> a tuple; anything else is a user error naming the bad item."""
    if text is None:
        return None
    values = []
    for item in str(text).split(","):
        try:
            values.append(float(item.strip()))
        except ValueError:
            raise CnnkitError(f"{option}: '{item.strip()}' is not a number", hint=f"e.g. {option} 0.485,0.456,0.406") from None
    return tuple(values)


def preprocess_choice(preprocess: str | None = None, scale: float | None = None, mean: str | None = None,
                      std: str | None = None, channel_order: str | None = None,
                      crop_fraction: float | None = None) -> Any:
    """The shared preprocessing options as a :class:`cnnkit.data.preprocess.PreprocessChoice`."""
    from cnnkit.data.preprocess import PreprocessChoice, preset

    if preprocess is not None:
        preset(preprocess)  # an unknown name fails here, naming it
    if channel_order is not None and channel_order.lower() not in ("rgb", "bgr"):
        raise CnnkitError(f"--channel-order must be rgb or bgr, got '{channel_order}'",
                          hint="bgr for Caffe-style models (or --preprocess caffe), else rgb")
    return PreprocessChoice(
        preset=preprocess.lower() if preprocess else None, scale=scale,
        mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"),
        channel_order=channel_order.lower() if channel_order else None, crop_fraction=crop_fraction,
    )


_PREPROCESS_PARAMS = (
    ("preprocess", str, preprocess_option), ("scale", float, scale_option), ("mean", str, mean_option),
    ("std", str, std_option), ("channel_order", str, channel_order_option), ("crop_fraction", float, crop_fraction_option),
)


def with_preprocess_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared preprocessing options (--preprocess, --scale, --mean, --std, --channel-order,
    --crop-fraction); it receives them parsed, as one ``preprocessing`` argument (a ``PreprocessChoice``)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for name, p in signature.parameters.items() if name != "preprocessing"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, kind, option in _PREPROCESS_PARAMS]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, None) for name, _, _ in _PREPROCESS_PARAMS}
        return command(*args, preprocessing=preprocess_choice(**values), **kwargs)

    positional = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.default is not p.empty else p for p in own]
    wrapper.__signature__ = signature.replace(parameters=positional + added)  # type: ignore[attr-defined]
    return wrapper


# --- Ray: the same options in every command that can run on a cluster ---------------------------------------
engine_option = typer.Option("local", "--engine", help="local (this process), or ray: spread over a Ray cluster "
                             '(pip install "cnnkit[ray]").')
address_option = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="With --engine ray: the cluster (auto, "
                              "HOST:PORT or ray://HOST:PORT). Default: a local cluster started for this command.")
