"""An execution environment's process: ``python -m fanout.runtime``, started by the invoker.

It plays Lambda's runtime: an Init phase (the optional init hook, then the handler's import or
its factory), then one invocation per request until the invoker closes the pipe. The protocol
(``fanout.wire`` frames) uses the process's original stdin and stdout; both are moved away
first, so that the function's own stdout (Powertools' JSON logs, EMF metrics) goes to stderr
and nothing it does can corrupt the protocol.

Messages, invoker to runtime: ``{"setup": {"sys_path", "init", "handler", "factory"}}`` once,
then ``{"event", "context"}`` per invocation. Runtime to invoker: ``{"ready": {"pid"}}`` or
``{"init_error": ERROR}``, then ``{"response": ...}`` or ``{"error": ERROR}`` per invocation,
where ERROR is Lambda's ``{"errorType", "errorMessage", "stackTrace"}``.
"""

from __future__ import annotations

import importlib
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any

from fanout import wire
from fanout.context import LocalLambdaContext

__all__ = ["main", "resolve"]

Handler = Callable[[dict[str, Any], Any], Any]


def resolve(target: str) -> Any:
    """The object named ``module:attribute`` (dots allowed in the attribute)."""
    module_name, _, attribute = target.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc),
    }


def _take_protocol_streams() -> tuple[IO[bytes], IO[bytes]]:
    """The protocol's pipes, moved off fds 0 and 1; fd 0 becomes /dev/null, fd 1 stderr."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return requests, replies


def _listen(requests: IO[bytes], inbox: queue.Queue[dict[str, Any]]) -> None:
    """Feed requests to the main thread; at end of file, end the process at once.

    The pipe closes when the invoker closes it or dies (even by SIGKILL), possibly while the
    handler runs: an environment never outlives its invoker.
    """
    while (message := wire.read_message(requests)) is not None:
        inbox.put(message)
    os._exit(0)


def _load(setup: dict[str, Any]) -> Handler:
    """The Init phase: the init hook, then the handler (named, or built by its factory)."""
    sys.path[:] = setup["sys_path"]  # import what the invoker's process can import
    if setup.get("init"):
        resolve(setup["init"]["target"])(**setup["init"]["kwargs"])
    if setup.get("factory"):
        handler: Handler = resolve(setup["factory"]["target"])(**setup["factory"]["kwargs"])
        return handler
    named: Handler = resolve(setup["handler"])
    return named


def _invoke(handler: Handler, request: dict[str, Any]) -> bytes:
    context = LocalLambdaContext(**request["context"])
    try:
        response = handler(request["event"], context)
    except Exception as exc:  # noqa: BLE001 - a function error, reported as Lambda reports it
        traceback.print_exc()  # the function's log, as the Python runtime writes it
        return wire.encode({"error": _error(exc)})
    try:
        return wire.encode({"response": response})
    except (TypeError, ValueError) as exc:
        return wire.encode({"error": _error(exc, "Runtime.MarshalError")})


def main() -> int:
    # Ctrl-C reaches the whole process group: the invoker decides what happens to us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = _take_protocol_streams()
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=_listen, args=(requests, inbox), daemon=True).start()

    def reply(frame: bytes) -> None:
        replies.write(frame)
        replies.flush()

    try:
        handler = _load(inbox.get()["setup"])
    except Exception as exc:  # noqa: BLE001 - Lambda's Runtime.InitError: reported, then exit
        traceback.print_exc()
        reply(wire.encode({"init_error": _error(exc)}))
        return 1
    reply(wire.encode({"ready": {"pid": os.getpid()}}))
    while True:
        reply(_invoke(handler, inbox.get()))


if __name__ == "__main__":
    sys.exit(main())
