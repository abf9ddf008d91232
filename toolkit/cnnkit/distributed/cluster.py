"""Connecting to a Ray cluster (or starting a local one) for the length of one command."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from cnnkit._deps import capture_native_stderr, require_ray
from cnnkit.errors import CnnkitError, shorten


def worker_env() -> dict[str, str]:
    """The driver's ``CNNKIT_*`` variables (offline mode, debug, fault injection), passed on to Ray workers."""
    return {k: v for k, v in os.environ.items() if k.startswith("CNNKIT_")}


@contextlib.contextmanager
def ray_cluster(address: str | None) -> Iterator[Any]:
    """Ray, connected: to the cluster ``address`` names (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), else to
    ``$RAY_ADDRESS``, else a local cluster started here and stopped at the end. A connection the caller already
    holds (``ray.init`` before) is used as it is and left open."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    _check_reachable(address)
    # Ray's C++ core logs warnings meant for Ray developers (e.g. about actor constructor arguments) to the
    # terminal; failures still reach the user as exceptions. The user's own setting wins.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        with capture_native_stderr():  # start-up chatter; replayed if the start fails
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                     configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local cluster"
        reason = shorten(exc, 200)
        raise CnnkitError(f"cannot connect to Ray at {where}: {reason}",
                          hint="start one with `ray start --head`, or pass --address auto|HOST:PORT|ray://HOST:PORT"
                          ) from None
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # cnnkit draws its own
        ctx.print_on_execution_start = False
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        yield ray
    finally:
        ray.shutdown()


def connect_for_process(address: str | None) -> Any:
    """Ray, connected as :func:`ray_cluster` does, but left open until this process ends (for a job that scores
    on Ray several times, as quantize's accuracy-aware loop does)."""
    import atexit

    ray = require_ray()
    if not ray.is_initialized():
        context = ray_cluster(address)
        context.__enter__()
        atexit.register(context.__exit__, None, None, None)
    return ray


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` that refuses connections fails now, in one line (Ray itself retries
    for minutes before giving up)."""
    import socket

    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise CnnkitError(f"--address {address!r} is not auto, HOST:PORT or ray://HOST:PORT",
                          hint="e.g. --address auto, --address 10.0.0.5:6379 or --address ray://10.0.0.5:10001")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise CnnkitError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})",
                          hint="is `ray start --head` running there? The port is the head's GCS port (6379) or, "
                               "with ray://, its client server (10001)") from None


def alive_nodes(ray: Any) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]
