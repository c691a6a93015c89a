"""The real worker, run inside an operator's process (``fanout poll``, ``fanout demo``).

In Lambda the function's stdout is its log stream; in the CLI stdout carries results (tables,
``--output json``), so the worker's Powertools logs are moved to stderr and default to WARNING.
Three small functions, so that a poller running the worker in a child process can reuse them:

    quiet_environment()  LOG_LEVEL=WARNING unless the environment chose a level (inherited by
                         child processes; read when the worker's module is imported)
    load_handler()       ``handler.app.lambda_handler`` (the function's entry point, as Lambda
                         imports it), with its logs routed to stderr
    reset()              forget the worker's cached settings, sessions and clients
    environment()        set (and unset) variables for in-process code, restored afterwards
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

__all__ = [
    "LOCAL_LOG_LEVEL",
    "environment",
    "load_handler",
    "quiet_environment",
    "reset",
    "route_worker_logs",
]

LOCAL_LOG_LEVEL: Final = "WARNING"
# Powertools reads the first of these that is set.
_LEVEL_VARIABLES: Final = ("POWERTOOLS_LOG_LEVEL", "LOG_LEVEL", "AWS_LAMBDA_LOG_LEVEL")

Handler = Callable[[dict[str, Any], Any], Any]


class _CurrentStderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is at the time of the write (redirections, tests)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def quiet_environment(env: MutableMapping[str, str] | None = None) -> None:
    """Default the worker's log level to WARNING for a local run (an explicit level wins)."""
    env = os.environ if env is None else env
    if not any(env.get(name) for name in _LEVEL_VARIABLES):
        env["LOG_LEVEL"] = LOCAL_LOG_LEVEL
    # Locally metrics are disabled (no CloudWatch agent): Powertools' empty flush is not news.
    env.setdefault("PYTHONWARNINGS", "ignore:No application metrics to publish")


def route_worker_logs() -> None:
    """Send the worker's Powertools log handlers (created on stdout) to stderr."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if not isinstance(logger, logging.Logger):
            continue  # a PlaceHolder: no handlers
        handler = getattr(logger, "powertools_handler", None)
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(_CurrentStderr())


def load_handler() -> Handler:
    """The function's entry point, imported as Lambda imports it, logging to stderr."""
    from handler.app import lambda_handler  # noqa: PLC0415 - reads the environment at import

    route_worker_logs()
    handler: Handler = lambda_handler
    return handler


def reset() -> None:
    """Forget the worker's settings, sessions and clients (after the environment changed)."""
    from handler.app import reset as reset_worker  # noqa: PLC0415 - only with a worker loaded

    reset_worker()


@contextmanager
def environment(values: Mapping[str, str], *, unset: Sequence[str] = ()) -> Iterator[None]:
    """Set (and unset) variables for in-process code; restore the previous ones afterwards."""
    names = [*values, *unset]
    saved = {name: os.environ.get(name) for name in names}
    for name in unset:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
