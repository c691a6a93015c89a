"""A fault-injecting HTTP proxy in front of the emulator, on 127.0.0.1.

The worker under test is pointed at the proxy through ``AWS_ENDPOINT_URL``; the proxy forwards
to moto and, on the way, applies :class:`Rule` s: answer with the service's own throttling or
5xx error (the call never ran), forward and then lose the response (the call ran, the caller
cannot know), deny or fail ``AssumeRole`` for chosen target accounts, delay, or call a hook
after a side effect reached AWS (e.g. SIGKILL the worker process before it hears back).

A proxy rather than a botocore ``before-send`` hook: it sees every process that talks to the
emulator (a poller killed with SIGKILL runs in a child process), it sees the wire exactly as
AWS would, and botocore's retry machinery treats its answers as real responses.

It also counts requests per (account, operation): the account is the role's account for
``AssumeRole`` and otherwise the account whose credentials signed the request, learnt from the
``AssumeRole`` responses that went through the proxy (moto maps the plain test credentials to
the ops account).
"""

from __future__ import annotations

import http.client
import json
import random
import re
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FaultProxy",
    "Forwarded",
    "Request",
    "Rule",
    "after_effect",
    "delay",
    "deny_assume_role",
    "lose_response",
    "server_error",
    "throttle",
]

OPS_ACCOUNT = "123456789012"
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")
_ROLE_ARN_ACCOUNT = re.compile(r"^arn:[^:]+:iam::([0-9]{12}):role/")
_CLOUDFRONT = (
    ("POST", re.compile(r"^/[0-9-]+/distribution/[^/]+/invalidation$"), "CreateInvalidation"),
    ("GET", re.compile(r"^/[0-9-]+/distribution/[^/]+/invalidation$"), "ListInvalidations"),
    ("GET", re.compile(r"^/[0-9-]+/distribution/[^/]+/invalidation/[^/]+$"), "GetInvalidation"),
    ("POST", re.compile(r"^/[0-9-]+/distribution$"), "CreateDistribution"),
    ("GET", re.compile(r"^/[0-9-]+/distribution/[^/]+$"), "GetDistribution"),
)
_DISTRIBUTION = re.compile(r"/distribution/([^/]+)")


@dataclass(frozen=True)
class Request:
    """One request as the proxy understood it."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    service: str  # the SigV4 signing name: sts, ssm, cloudfront, sqs, dynamodb, ...
    access_key: str
    caller_account: str

    @cached_property
    def protocol(self) -> str:
        if "x-amz-target" in self.headers:
            return "json"
        if self.form.get("Action"):
            return "query"
        if "json" in self.headers.get("content-type", ""):
            return "rest-json"
        return "rest-xml"

    @cached_property
    def form(self) -> dict[str, str]:
        if "x-www-form-urlencoded" not in self.headers.get("content-type", ""):
            return {}
        parsed = parse_qs(self.body.decode("utf-8", "replace"))
        return {name: values[0] for name, values in parsed.items()}

    @cached_property
    def json_body(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @cached_property
    def operation(self) -> str:
        target = self.headers.get("x-amz-target")
        if target:
            return target.rsplit(".", 1)[-1]
        if self.form.get("Action"):
            return self.form["Action"]
        path = urlsplit(self.path).path
        for method, pattern, name in _CLOUDFRONT:
            if self.method == method and pattern.match(path):
                return name
        return f"{self.method} {path}"

    @cached_property
    def account(self) -> str:
        """The account the request acts in: the role's account for AssumeRole."""
        if self.operation == "AssumeRole":
            match = _ROLE_ARN_ACCOUNT.match(self.form.get("RoleArn", ""))
            if match:
                return match.group(1)
        return self.caller_account

    @property
    def distribution_id(self) -> str | None:
        match = _DISTRIBUTION.search(urlsplit(self.path).path)
        return match.group(1) if match else None


@dataclass(frozen=True)
class Forwarded:
    """The emulator's answer to a forwarded request."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


# What a rule does with a matching request. ``forward`` sends it to the emulator.
Action = Callable[[Request, Callable[[], Forwarded]], Forwarded]


@dataclass
class Rule:
    """Apply ``action`` to requests ``match`` accepts: after ``skip`` matches, at most ``times``
    times, each with ``probability`` (drawn from a seeded generator: runs repeat)."""

    name: str
    match: Callable[[Request], bool]
    action: Action
    probability: float = 1.0
    times: int | None = None
    skip: int = 0
    seed: int = 0
    matched: int = 0
    fired: int = 0
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def decide(self, request: Request) -> bool:
        """Called under the proxy's lock: does this rule take the request?"""
        if not self.match(request):
            return False
        self.matched += 1
        if self.matched <= self.skip:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self._random.random() >= self.probability:
            return False
        self.fired += 1
        return True


def where(
    *,
    service: str | None = None,
    operations: Iterable[str] = (),
    accounts: Iterable[str] = (),
    distributions: Iterable[str] = (),
) -> Callable[[Request], bool]:
    """A request predicate; an empty filter matches everything."""
    ops, accts, dists = frozenset(operations), frozenset(accounts), frozenset(distributions)

    def match(request: Request) -> bool:
        return (
            (service is None or request.service == service)
            and (not ops or request.operation in ops)
            and (not accts or request.account in accts)
            and (not dists or request.distribution_id in dists)
        )

    return match


def error_response(request: Request, status: int, code: str, message: str) -> Forwarded:
    """An error in the format the request's protocol uses, as botocore parses AWS's."""
    request_id = str(uuid.uuid4())
    if request.protocol in ("json", "rest-json"):
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", code),
            # awsQueryCompatible services (SQS) read the code from here.
            ("x-amzn-query-error", f"{code};{'Sender' if status < 500 else 'Receiver'}"),
        ]
        return Forwarded(status, headers, body)
    root = ET.Element("ErrorResponse")
    error = ET.SubElement(root, "Error")
    ET.SubElement(error, "Type").text = "Sender" if status < 500 else "Receiver"
    ET.SubElement(error, "Code").text = code
    ET.SubElement(error, "Message").text = message
    ET.SubElement(root, "RequestId").text = request_id
    body = b'<?xml version="1.0"?>' + ET.tostring(root)
    return Forwarded(status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body)


def _throttling_code(request: Request) -> str:
    # Query and rest-xml services (STS, CloudFront) say Throttling; JSON ones ThrottlingException.
    return "ThrottlingException" if request.protocol in ("json", "rest-json") else "Throttling"


def _server_error_code(request: Request, status: int) -> str:
    if status == 503:
        return "ServiceUnavailable"
    return "InternalServerError" if request.protocol in ("json", "rest-json") else "InternalFailure"


def throttle(name: str, match: Callable[[Request], bool], **schedule: Any) -> Rule:
    """400 Throttling: the call did not run."""

    def action(request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
        return error_response(request, 400, _throttling_code(request), "Rate exceeded")

    return Rule(name, match, action, **schedule)


def server_error(
    name: str, match: Callable[[Request], bool], *, status: int = 503, **schedule: Any
) -> Rule:
    """A 5xx before the call reached the service: it did not run."""

    def action(request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
        code = _server_error_code(request, status)
        return error_response(request, status, code, f"injected {status}")

    return Rule(name, match, action, **schedule)


def lose_response(
    name: str, match: Callable[[Request], bool], *, status: int = 503, **schedule: Any
) -> Rule:
    """The call runs, then the caller gets a 5xx: its outcome is unknown to the worker."""

    def action(request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
        forward()
        code = _server_error_code(request, status)
        return error_response(request, status, code, f"injected {status} after the call ran")

    return Rule(name, match, action, **schedule)


def deny_assume_role(accounts: Iterable[str]) -> Rule:
    """The target role does not trust the worker: AccessDenied, on every attempt."""
    denied = frozenset(accounts)

    def action(request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
        message = (
            f"User: arn:aws:sts::{OPS_ACCOUNT}:assumed-role/worker is not authorized to "
            f"perform: sts:AssumeRole on resource: {request.form.get('RoleArn', '')}"
        )
        return error_response(request, 403, "AccessDenied", message)

    return Rule("assume-role denied", where(operations=["AssumeRole"], accounts=denied), action)


def delay(name: str, match: Callable[[Request], bool], *, seconds: float, **schedule: Any) -> Rule:
    """Forward after ``seconds``: a slow service."""
    stop = threading.Event()

    def action(request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
        stop.wait(seconds)
        return forward()

    return Rule(name, match, action, **schedule)


def after_effect(
    name: str,
    match: Callable[[Request], bool],
    hook: Callable[[Request, Forwarded], None],
    **schedule: Any,
) -> Rule:
    """Forward; when the call succeeded, run ``hook`` before the caller hears back."""

    def action(request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
        response = forward()
        if response.status < 300:
            hook(request, response)
        return response

    return Rule(name, match, action, **schedule)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that died (SIGKILL) mid-connection is expected here, not an error."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            super().handle_error(request, client_address)


class FaultProxy:
    """The proxy; ``start()`` it, point clients at ``url``, ``add()`` rules, read counters."""

    def __init__(self, upstream_url: str) -> None:
        upstream = urlsplit(upstream_url)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._keys: dict[str, str] = {}  # access key id -> account
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[tuple[str, str, str]] = Counter()  # (account, operation, rule)
        self.succeeded: Counter[tuple[str, str]] = Counter()  # 2xx answers that reached callers
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def add(self, *rules: Rule) -> None:
        with self._lock:
            self._rules.extend(rules)

    def reset(self) -> None:
        """Forget rules and counters (learnt credentials stay: they are still valid)."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.faults.clear()
            self.succeeded.clear()

    def count(self, operation: str, account: str | None = None, *, what: str = "requests") -> int:
        counter: Counter[Any] = getattr(self, what)
        return sum(
            n
            for key, n in counter.items()
            if key[1] == operation and (account is None or key[0] == account)
        )

    def fired(self, rule_name: str) -> int:
        return sum(n for key, n in self.faults.items() if key[2] == rule_name)

    # -- the request path --------------------------------------------------------------------

    def _parse(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Request:
        match = _CREDENTIAL.search(headers.get("authorization", ""))
        access_key = match.group(1) if match else ""
        service = match.group(3) if match else ""
        with self._lock:
            caller = self._keys.get(access_key, OPS_ACCOUNT)
        return Request(method, path, headers, body, service, access_key, caller)

    def _forward(self, request: Request) -> Forwarded:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
            connection.request(request.method, request.path, body=request.body, headers=headers)
            response = connection.getresponse()
            body = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return Forwarded(response.status, kept, body)
        finally:
            connection.close()

    def _learn(self, request: Request, response: Forwarded) -> None:
        if request.operation != "AssumeRole" or response.status >= 300:
            return
        try:
            root = ET.fromstring(response.body)  # noqa: S314 - the local emulator's answer
        except ET.ParseError:
            return
        for element in root.iter():
            if element.tag.endswith("AccessKeyId") and element.text:
                with self._lock:
                    self._keys[element.text] = request.account

    def handle(self, request: Request) -> Forwarded:
        with self._lock:
            self.requests[(request.account, request.operation)] += 1
            rule = next((r for r in self._rules if r.decide(request)), None)
            if rule is not None:
                self.faults[(request.account, request.operation, rule.name)] += 1
        response = (
            rule.action(request, lambda: self._forward(request))
            if rule is not None
            else self._forward(request)
        )
        self._learn(request, response)
        if response.status < 300:
            with self._lock:
                self.succeeded[(request.account, request.operation)] += 1
        return response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet: the tests report what matters."""

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = proxy._parse(self.command, self.path, headers, body)
                response = proxy.handle(request)
                try:
                    self.send_response(response.status)
                    for name, value in response.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the caller is gone (e.g. it was killed)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve  # noqa: N815

        return Handler
