"""The one way this project starts moto: its WSGI app behind the fidelity patches.

``start_emulator`` serves moto's own app (``DomainDispatcherApplication``, what
``ThreadedMotoServer`` and ``moto_server`` serve) through :class:`~fanout.emulator.middleware.
Middleware` with every patch of :func:`fidelity_patches`, on a werkzeug threaded server.
The CLI verbs, the demo, the integration and fault tiers and the benchmark host all call it; a
meta-test checks nothing else in the repository starts a moto server.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Final

from werkzeug.serving import BaseWSGIServer, make_server

from fanout.emulator import moto_costs, sqs_delivery
from fanout.emulator.cloudfront import CallerReferenceIdempotency
from fanout.emulator.dynamodb import DynamoDBAtomicity
from fanout.emulator.ids import StableIds
from fanout.emulator.middleware import Middleware, Patch
from fanout.emulator.sqs import MessageMoveTasks
from fanout.emulator.ssm import ListCommandsFilters, SendCommandInstances

__all__ = ["Emulator", "emulator_app", "fidelity_patches", "start_emulator"]

_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names, not binds


def fidelity_patches() -> list[Patch]:
    """Every patch, in the order they are asked (the first that wants a request owns it)."""
    return [
        StableIds(),
        DynamoDBAtomicity(),
        CallerReferenceIdempotency(),
        ListCommandsFilters(),
        SendCommandInstances(),
        MessageMoveTasks(),
    ]


def _list_moto_modules_once() -> None:
    """moto's router lists its package directory (a listdir and an isdir per service) on every
    request to match a host: ~15% of the emulator's CPU in B1. The listing cannot change while
    the server runs, so it is taken once; what moto answers is unchanged."""
    from moto import backends  # noqa: PLC0415 - loads moto

    if getattr(backends.list_of_moto_modules, "fanout_cached", False):
        return
    modules = tuple(backends.list_of_moto_modules())

    def listed() -> tuple[str, ...]:
        return modules

    listed.fanout_cached = True  # type: ignore[attr-defined]
    backends.list_of_moto_modules = listed


def emulator_app() -> Middleware:
    """moto's WSGI app behind the patches (for a server of your own; prefer start_emulator)."""
    from moto.moto_server.werkzeug_app import (  # noqa: PLC0415 - loads moto
        DomainDispatcherApplication,
        create_backend_app,
    )

    _list_moto_modules_once()
    moto_costs.install()
    sqs_delivery.install()
    return Middleware(DomainDispatcherApplication(create_backend_app), fidelity_patches())


class Emulator:
    """A running emulator; ``stop()`` it, or use it as a context manager."""

    def __init__(
        self, server: BaseWSGIServer, thread: threading.Thread, app: Middleware, endpoint_url: str
    ) -> None:
        self._server = server
        self._thread = thread
        self.app = app
        self.endpoint_url = endpoint_url
        self.host, self.port = str(server.server_address[0]), int(server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.app.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_emulator(host: str = "127.0.0.1", port: int = 0) -> Emulator:
    """Serve the emulator on ``host``; port 0 picks a free one (see ``endpoint_url``).

    On a wildcard host (``0.0.0.0``) the endpoint URL names 127.0.0.1, which reaches it from
    this machine; from a container use this machine's address and the same port.
    """
    from moto.moto_server.werkzeug_app import MotoRequestHandler  # noqa: PLC0415 - loads moto

    # werkzeug logs every request at INFO: silence it so the CLI output stays readable.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = emulator_app()
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="fanout-emulator", daemon=True)
    thread.start()
    bound = int(server.server_address[1])
    reachable = "127.0.0.1" if host in _WILDCARD_HOSTS else host
    if ":" in reachable:
        reachable = f"[{reachable}]"
    return Emulator(server, thread, app, f"http://{reachable}:{bound}")
