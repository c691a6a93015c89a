"""How the local poller invokes the function: in a killable, warm process, as Lambda does.

Lambda runs a handler in an execution environment that it reuses while invocations succeed
(warm: module state, sessions and clients survive) and stops hard at the timeout: the
environment is frozen and shut down, code in flight never reports back, and the next
invocation gets a fresh environment (a cold start). :class:`ProcessInvoker` does the same with
one child process (``fanout.runtime``) at a time: it sends each event with the invocation's
deadline, SIGKILLs the child when the deadline passes, and starts a new one for the next
invocation. :class:`InProcessInvoker` calls a callable in this process instead (tests that wrap
a handler in-process); it cannot stop an overrun, only disregard its answer.

The child is a fresh interpreter (``subprocess``, not ``fork``): it inherits the environment
variables, not this process's threads, connection pools or imported modules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from fanout import wire
from fanout.context import LocalLambdaContext

__all__ = [
    "DEFAULT_HANDLER",
    "INIT_TIMEOUT_S",
    "Call",
    "Handler",
    "InProcessInvoker",
    "Invocation",
    "Invoker",
    "Outcome",
    "ProcessInvoker",
]

Handler = Callable[[dict[str, Any], Any], Any]

# The function's Handler setting (CodeUri: src/, Handler: handler.app.lambda_handler).
DEFAULT_HANDLER: Final = "handler.app:lambda_handler"
# Lambda bounds an on-demand Init phase by 10 s; past that, it runs Init again within the first
# invocation, under the function's timeout.
INIT_TIMEOUT_S: Final = 10.0
# How long a child may take to exit after its pipe closes before it is killed.
_CLOSE_GRACE_S: Final = 2.0
_TARGET_RE: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

log = logging.getLogger("fanout_local.invoker")


@dataclass(frozen=True)
class Call:
    """A function the execution environment imports and calls: ``module:function`` and
    JSON-able keyword arguments (checked here, not at 3 a.m. in the child)."""

    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _TARGET_RE.match(self.target):
            raise ValueError(f"expected 'module:function', got {self.target!r}")
        try:
            json.dumps(dict(self.kwargs), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"kwargs of {self.target} are not JSON-able: {exc}") from exc

    def to_message(self) -> dict[str, Any]:
        return {"target": self.target, "kwargs": dict(self.kwargs)}


class Outcome(StrEnum):
    OK = "ok"  # the handler answered in time (its answer may still be malformed)
    ERROR = "error"  # a function error: it raised, its Init failed, or its process died
    TIMEOUT = "timeout"  # it did not answer before the deadline


@dataclass(frozen=True)
class Invocation:
    """How one invocation ended."""

    outcome: Outcome
    response: Any = None
    error: str | None = None  # "ErrorType: message" of a function error
    cold_start: bool = False  # an Init phase ran for this invocation
    pid: int | None = None  # the process that ran it


class Invoker(Protocol):
    """Runs one invocation; ``context.deadline`` is when it times out."""

    def invoke(self, event: dict[str, Any], context: LocalLambdaContext) -> Invocation: ...

    def close(self) -> None: ...


class InProcessInvoker:
    """Calls ``handler`` in this process (by default the real one, imported on first use).

    An overrun cannot be stopped here: its answer is disregarded (reported as a timeout), but
    its code ran to the end.
    """

    def __init__(self, handler: Handler | None = None) -> None:
        self._handler = handler
        self._warm = False

    @property
    def handler(self) -> Handler:
        if self._handler is None:
            from handler.app import lambda_handler  # noqa: PLC0415 - only when polling for real

            self._handler = lambda_handler
        return self._handler

    def invoke(self, event: dict[str, Any], context: LocalLambdaContext) -> Invocation:
        cold, self._warm = not self._warm, True
        try:
            response = self.handler(event, context)
        except Exception as exc:  # a function error: the poller fails the batch
            log.exception("handler raised")
            return Invocation(Outcome.ERROR, error=f"{type(exc).__name__}: {exc}", cold_start=cold)
        if context.get_remaining_time_in_millis() == 0:
            return Invocation(Outcome.TIMEOUT, cold_start=cold)
        return Invocation(Outcome.OK, response=response, cold_start=cold)

    def close(self) -> None:
        """Nothing to stop: the handler lives in this process."""


class _Environment:
    """One child process running ``fanout.runtime``."""

    def __init__(self, setup: dict[str, Any], python: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [python, "-m", "fanout.runtime"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:  # pragma: no cover - PIPE always gives both
            raise RuntimeError("the runtime's pipes were not created")
        self._requests = stdin
        self._replies = wire.Receiver(stdout.fileno())
        with contextlib.suppress(BrokenPipeError):  # it died at once: Init sees end of file
            self.send({"setup": setup})

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        """``BrokenPipeError`` when the process has died."""
        self._requests.write(wire.encode(message))
        self._requests.flush()

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next reply; None when the process died; ``TimeoutError`` at ``deadline``."""
        return self._replies.receive(deadline)

    def status(self) -> str:
        """How the process ended (waits for it)."""
        code = self.process.wait()
        return f"signal {-code}" if code < 0 else f"status {code}"

    def kill(self) -> None:
        """SIGKILL: nothing more of the invocation in flight runs."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._release()

    def close(self) -> None:
        """End of input: the runtime exits; killed if it does not in a moment."""
        try:
            self._requests.close()
            self.process.wait(timeout=_CLOSE_GRACE_S)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self._release()

    def _release(self) -> None:
        self._replies.close()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):  # a pipe a dead process left half-written
                    stream.close()


class ProcessInvoker:
    """Invokes the handler in a warm child process, killed at the deadline.

    - ``handler``: ``module:attribute`` of the handler, like Lambda's Handler setting;
    - ``handler_factory``: instead, a function called once per environment (after the init
      hook) that returns the handler, e.g. the real one wrapped;
    - ``init``: called in each new environment before the handler is imported (patches,
      clocks, shortened waits);
    - ``init_timeout_s``: the Init phase's own limit; an Init that overruns it is killed and run
      again within the invocation, under the function's timeout (as Lambda does).

    The environment's variables are this process's at the moment it starts (a cold start).
    """

    def __init__(
        self,
        *,
        handler: str = DEFAULT_HANDLER,
        handler_factory: Call | None = None,
        init: Call | None = None,
        init_timeout_s: float = INIT_TIMEOUT_S,
        python: str = sys.executable,
    ) -> None:
        if not _TARGET_RE.match(handler):
            raise ValueError(f"handler must be 'module:attribute', got {handler!r}")
        self._setup = {
            "handler": handler,
            "factory": handler_factory.to_message() if handler_factory else None,
            "init": init.to_message() if init else None,
        }
        self._init_timeout_s = init_timeout_s
        self._python = python
        # The warm environment, if any: a list the finalizer shares, so that an invoker dropped
        # without close() (or alive at interpreter exit) still takes its child along.
        self._warm: list[_Environment] = []
        weakref.finalize(self, _kill_all, self._warm)

    @property
    def pid(self) -> int | None:
        """The warm environment's process, if there is one."""
        return self._warm[0].pid if self._warm else None

    def invoke(self, event: dict[str, Any], context: LocalLambdaContext) -> Invocation:
        cold = not self._warm
        try:
            if cold:
                context = self._start(context)
        except _InitFailedError as exc:
            return Invocation(Outcome.ERROR, error=str(exc), cold_start=True, pid=exc.pid)
        [environment] = self._warm
        try:
            environment.send({"event": event, "context": context.to_fields()})
        except BrokenPipeError:
            # It died between invocations: nothing of this one ran; Lambda would use another.
            log.warning("environment %d had exited (%s)", environment.pid, environment.status())
            self._drop()
            return self.invoke(event, context)
        try:
            reply = environment.receive(context.deadline)
        except TimeoutError:
            self._drop(kill=True)
            return Invocation(Outcome.TIMEOUT, cold_start=cold, pid=environment.pid)
        except BaseException:
            self._drop(kill=True)  # interrupted mid-invocation: the environment is not reusable
            raise
        if reply is None:
            error = f"Runtime.ExitError: the runtime exited ({environment.status()})"
            self._drop()
            return Invocation(Outcome.ERROR, error=error, cold_start=cold, pid=environment.pid)
        if "error" in reply:
            error = _describe(reply["error"])
            return Invocation(Outcome.ERROR, error=error, cold_start=cold, pid=environment.pid)
        response = reply.get("response")
        return Invocation(Outcome.OK, response=response, cold_start=cold, pid=environment.pid)

    def _start(self, context: LocalLambdaContext) -> LocalLambdaContext:
        """A new environment through its Init phase; the context, its deadline moved past the
        Init phase (Lambda's timeout covers the Invoke phase)."""
        started = time.monotonic()
        try:
            self._init(started + self._init_timeout_s)
        except TimeoutError:
            log.warning(
                "Init took over %.0f s: run again within the invocation", self._init_timeout_s
            )
            context = context.postponed(time.monotonic() - started)
            try:
                self._init(context.deadline)
            except TimeoutError:
                message = "Runtime.InitTimeout: Init did not end before the function's timeout"
                raise _InitFailedError(message, None) from None
            return context
        return context.postponed(time.monotonic() - started)

    def _init(self, deadline: float) -> None:
        """Start an environment and wait for its Init; killed if it is not ready by
        ``deadline`` (``TimeoutError``) or interrupted."""
        environment = _Environment({**self._setup, "sys_path": list(sys.path)}, self._python)
        self._warm.append(environment)
        try:
            reply = environment.receive(deadline)
        except BaseException:
            self._drop(kill=True)
            raise
        if reply is not None and "ready" in reply:
            return
        if reply is None:
            message = f"Runtime.ExitError: the runtime exited ({environment.status()}) in Init"
        else:
            message = f"Runtime.InitError: {_describe(reply['init_error'])}"
        self._drop()
        raise _InitFailedError(message, environment.pid)

    def _drop(self, *, kill: bool = False) -> None:
        while self._warm:
            environment = self._warm.pop()
            if kill:
                environment.kill()
            else:
                environment.close()

    def close(self) -> None:
        """Shut the warm environment down (a later invocation starts a new one)."""
        self._drop()

    def __enter__(self) -> ProcessInvoker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _kill_all(environments: list[_Environment]) -> None:
    for environment in environments:
        environment.kill()


class _InitFailedError(Exception):
    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def _describe(error: Mapping[str, Any]) -> str:
    return f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"
