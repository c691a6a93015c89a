"""The WSGI layer between the HTTP server and moto: routes the requests a patch owns to it.

A patch looks only at a request's head (method, path, headers) to say whether it wants the
request, so every other request (S3 uploads included) streams through to moto untouched. A
patch's handler gets the whole request as a :class:`Call` and a ``forward`` function that runs
it through moto and returns moto's answer, which it may pass on, change or replace.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from http import HTTPStatus
from typing import Any, Final, Protocol

from fanout.emulator.wire import Reply, error_reply, signature

__all__ = [
    "Call",
    "Forward",
    "Handler",
    "Head",
    "Middleware",
    "Patch",
    "ServiceError",
    "WsgiApp",
]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# moto's rule for the access key in an Authorization header (moto.core.responses).
_ACCESS_KEY: Final = re.compile(r"AWS.*(?P<key>(?<![A-Z0-9])[A-Z0-9]{20}(?![A-Z0-9]))[:/]")
_DEFAULT_REGION: Final = "us-east-1"


@dataclass(frozen=True, slots=True)
class Head:
    """What a patch sees to decide whether a request is its own."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names

    @property
    def target(self) -> str:
        return self.headers.get("x-amz-target", "")


@dataclass(frozen=True)
class Call:
    """A whole request, as the patch that owns it sees it."""

    head: Head
    query: str
    body: bytes
    account: str
    region: str
    service: str

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def path(self) -> str:
        return self.head.path

    @property
    def headers(self) -> Mapping[str, str]:
        return self.head.headers

    @cached_property
    def json(self) -> dict[str, Any]:
        """The JSON body; one that is not a JSON object is a SerializationException."""
        try:
            document = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise ServiceError(
                400, "SerializationException", "Start of structure or map found where not expected"
            ) from exc
        if not isinstance(document, dict):
            raise ServiceError(400, "SerializationException", "Expected a JSON object")
        return document

    def error(self, status: int, code: str, message: str, *, type_prefix: str = "") -> Reply:
        return error_reply(
            self.service, self.headers, status, code, message, type_prefix=type_prefix
        )


class ServiceError(Exception):
    """Raised by a patch: answered as the service's error in the request's protocol."""

    def __init__(self, status: int, code: str, message: str, *, type_prefix: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.type_prefix = type_prefix

    def reply(self, call: Call) -> Reply:
        return call.error(self.status, self.code, self.message, type_prefix=self.type_prefix)


Forward = Callable[[], Reply]
Handler = Callable[[Call, Forward], Reply]


class Patch(Protocol):
    """One fidelity fix. ``handler`` returns None for requests it leaves to moto."""

    name: str

    def handler(self, head: Head) -> Handler | None: ...

    def close(self) -> None: ...


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _account(headers: Mapping[str, str]) -> str:
    """The account moto acts in for these headers (the order of moto.core.responses)."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if "x-moto-account-id" in headers:
        return headers["x-moto-account-id"]
    from moto.iam.models import get_account_id_from  # noqa: PLC0415 - moto internals

    match = _ACCESS_KEY.search(headers.get("authorization", ""))
    return str(get_account_id_from(match.group("key") if match else "AKIAEXAMPLE"))


class Middleware:
    """A WSGI app: moto's, with ``patches`` in front (the first that wants a request owns it)."""

    def __init__(self, app: WsgiApp, patches: Sequence[Patch]) -> None:
        self._app = app
        self.patches = tuple(patches)

    def close(self) -> None:
        for patch in self.patches:
            patch.close()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        head = Head(
            str(environ.get("REQUEST_METHOD", "GET")),
            str(environ.get("PATH_INFO", "/")),
            _headers(environ),
        )
        handler = next((h for p in self.patches if (h := p.handler(head)) is not None), None)
        if handler is None:
            return self._app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        scope = signature(head.headers.get("authorization", ""))
        call = Call(
            head,
            str(environ.get("QUERY_STRING", "")),
            body,
            _account(head.headers),
            scope.region if scope else _DEFAULT_REGION,
            scope.service if scope else "",
        )
        try:
            reply = handler(call, lambda: self._forward(environ, body))
        except ServiceError as exc:
            reply = exc.reply(call)
        phrase = _phrase(reply.status)
        kept = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
        start_response(
            f"{reply.status} {phrase}", [*kept, ("Content-Length", str(len(reply.body)))]
        )
        return [reply.body]

    def _forward(self, environ: dict[str, Any], body: bytes) -> Reply:
        """Run the request through moto; its answer, whole."""
        inner = dict(environ)
        inner["wsgi.input"] = io.BytesIO(body)
        inner["CONTENT_LENGTH"] = str(len(body))
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            answer["status"] = int(status.split(" ", 1)[0])
            answer["headers"] = list(headers)

        chunks = self._app(inner, start_response)
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return Reply(answer["status"], answer["headers"], data)
