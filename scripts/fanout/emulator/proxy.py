"""An HTTP proxy in front of the emulator: counts, rate-limits and injects faults, on 127.0.0.1.

Clients are pointed at the proxy through ``AWS_ENDPOINT_URL``; it forwards to the emulator and,
on the way:

- **counts** every request per (account, operation), and per (service, operation, account,
  outcome) for the benchmarks, so API calls are counted on the "AWS" side whoever made them;
- **rate-limits** operations given a :class:`Quota`: a token bucket per (account, operation)
  answers a request without a token with the service's own throttling error, which botocore's
  retry machinery and the worker recognise (the emulator has no throttling of its own);
- **injects faults** with :class:`Rule` s: answer with throttling or a 5xx (the call never ran),
  forward and then lose the answer (the call ran, the caller cannot know), deny AssumeRole for
  chosen accounts, delay, or run a hook after a side effect (e.g. SIGKILL the caller);
- adds a fixed **latency** to every request when asked (real AWS answers over a network; the
  in-process emulator only costs CPU).

A proxy rather than a botocore hook: it sees every process that talks to the emulator (a worker
killed with SIGKILL runs in a child process), it sees the wire as AWS would, and botocore treats
its answers as real responses.

The account of a request is the role's account for AssumeRole, otherwise the account whose
credentials signed it: learnt from the AssumeRole answers that pass through the proxy, or asked
of ``account_of`` (the benchmark host passes moto's own mapping).

Admin routes (``/_proxy/stats``, ``/_proxy/reset``, and any other route handed to ``admin``) let
a process that does not hold the proxy object read and reset it.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from fanout.emulator.seed import OPS_ACCOUNT
from fanout.emulator.wire import (
    Reply,
    error_reply,
    operation_name,
    protocol_of,
    signature,
    throttling_code,
)

__all__ = [
    "ADMIN_PREFIX",
    "Forwarded",
    "Proxy",
    "Quota",
    "Request",
    "Rule",
    "after_effect",
    "delay",
    "deny_assume_role",
    "error_response",
    "lose_response",
    "server_error",
    "throttle",
    "where",
]

ADMIN_PREFIX: Final = "/_proxy/"
UNSIGNED: Final = "anonymous"
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_ROLE_ARN_ACCOUNT: Final = re.compile(r"^arn:[^:]+:iam::([0-9]{12}):role/")
_SIGNED_REGION: Final = re.compile(r"Credential=[^/]+/[0-9]{8}/([a-z0-9-]+)/")
_DISTRIBUTION: Final = re.compile(r"/distribution/([^/]+)")

# The emulator's answer to a forwarded request (the name the fault suite uses).
Forwarded = Reply


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
        known = protocol_of(self.service)
        if known is not None:
            return known
        return "json" if "x-amz-target" in self.headers else "query"

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
        return operation_name(self.service, self.method, self.path, self.headers, self.body)

    @property
    def api(self) -> str:
        """``service:Operation``, the key quotas are given by."""
        return f"{self.service or 'unknown'}:{self.operation}"

    @cached_property
    def account(self) -> str:
        """The account the request acts in: the role's account for AssumeRole."""
        if self.operation == "AssumeRole":
            match = _ROLE_ARN_ACCOUNT.match(self.form.get("RoleArn", ""))
            if match:
                return match.group(1)
        return self.caller_account

    @cached_property
    def region(self) -> str | None:
        """The region the request was signed for (SigV4's credential scope)."""
        match = _SIGNED_REGION.search(self.headers.get("authorization", ""))
        return match.group(1) if match else None

    @property
    def distribution_id(self) -> str | None:
        match = _DISTRIBUTION.search(urlsplit(self.path).path)
        return match.group(1) if match else None


def error_response(request: Request, status: int, code: str, message: str) -> Reply:
    """An error in the request's protocol, as botocore parses AWS's."""
    return error_reply(request.service, request.headers, status, code, message)


# -- fault rules --------------------------------------------------------------------------------

# What a rule does with a matching request. ``forward`` sends it to the emulator.
Action = Callable[[Request, Callable[[], Reply]], Reply]


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


def _server_error_code(request: Request, status: int) -> str:
    if status == 503:
        return "ServiceUnavailable"
    return "InternalServerError" if request.protocol in ("json", "rest-json") else "InternalFailure"


def throttle(name: str, match: Callable[[Request], bool], **schedule: Any) -> Rule:
    """400 Throttling: the call did not run."""

    def action(request: Request, _forward: Callable[[], Reply]) -> Reply:
        code = throttling_code(request.service, request.headers)
        return error_response(request, 400, code, "Rate exceeded")

    return Rule(name, match, action, **schedule)


def server_error(
    name: str, match: Callable[[Request], bool], *, status: int = 503, **schedule: Any
) -> Rule:
    """A 5xx before the call reached the service: it did not run."""

    def action(request: Request, _forward: Callable[[], Reply]) -> Reply:
        code = _server_error_code(request, status)
        return error_response(request, status, code, f"injected {status}")

    return Rule(name, match, action, **schedule)


def lose_response(
    name: str, match: Callable[[Request], bool], *, status: int = 503, **schedule: Any
) -> Rule:
    """The call runs, then the caller gets a 5xx: its outcome is unknown to the worker."""

    def action(request: Request, forward: Callable[[], Reply]) -> Reply:
        forward()
        code = _server_error_code(request, status)
        return error_response(request, status, code, f"injected {status} after the call ran")

    return Rule(name, match, action, **schedule)


def deny_assume_role(accounts: Iterable[str]) -> Rule:
    """The target role does not trust the worker: AccessDenied, on every attempt."""
    denied = frozenset(accounts)

    def action(request: Request, _forward: Callable[[], Reply]) -> Reply:
        message = (
            f"User: arn:aws:sts::{OPS_ACCOUNT}:assumed-role/worker is not authorized to "
            f"perform: sts:AssumeRole on resource: {request.form.get('RoleArn', '')}"
        )
        return error_response(request, 403, "AccessDenied", message)

    return Rule("assume-role denied", where(operations=["AssumeRole"], accounts=denied), action)


def delay(name: str, match: Callable[[Request], bool], *, seconds: float, **schedule: Any) -> Rule:
    """Forward after ``seconds``: a slow service."""
    stop = threading.Event()

    def action(_request: Request, forward: Callable[[], Reply]) -> Reply:
        stop.wait(seconds)
        return forward()

    return Rule(name, match, action, **schedule)


def after_effect(
    name: str,
    match: Callable[[Request], bool],
    hook: Callable[[Request, Reply], None],
    **schedule: Any,
) -> Rule:
    """Forward; when the call succeeded, run ``hook`` before the caller hears back."""

    def action(request: Request, forward: Callable[[], Reply]) -> Reply:
        response = forward()
        if response.status < 300:
            hook(request, response)
        return response

    return Rule(name, match, action, **schedule)


# -- quotas -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quota:
    """Requests per second per account, with a burst, for one ``service:Operation``."""

    rate: float
    burst: int


@dataclass(slots=True)
class _Bucket:
    rate: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _Timeline:
    """When a quota'd operation was first asked for and last granted, in the proxy's clock."""

    first: float | None = None
    last_ok: float | None = None
    ok: int = 0
    throttled: int = 0


# -- the proxy ----------------------------------------------------------------------------------

AdminHook = Callable[[str, str, bytes], Any]  # (method, route, body) -> JSON, or None: 404


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of new connections from many threads must not be refused

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that died (SIGKILL) mid-connection is expected here, not an error."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            super().handle_error(request, client_address)


class Proxy:
    """The proxy; ``start()`` it, point clients at ``url``, ``add()`` rules, set quotas, read
    counters.

    ``keep_alive``: reuse one upstream connection per proxy thread (the benchmarks' throughput);
    off, every request gets a fresh connection, so a connection the emulator closed is never
    retried (a retry could repeat a call that ran: the fault suite counts effects exactly).
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        account_of: Callable[[str], str] | None = None,
        admin: AdminHook | None = None,
        keep_alive: bool = False,
    ) -> None:
        upstream = urlsplit(upstream_url)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self._account_of = account_of
        self._admin = admin
        self._keep_alive = keep_alive
        self._lock = threading.Lock()
        self._local = threading.local()
        self._rules: list[Rule] = []
        self._keys: dict[str, str] = {}  # access key id -> account
        self._quotas: dict[str, Quota] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._timelines: dict[str, _Timeline] = {}
        self.latency_s = 0.0
        self.requests: Counter[tuple[str, str]] = Counter()  # (account, operation)
        self.faults: Counter[tuple[str, str, str]] = Counter()  # (account, operation, rule)
        self.succeeded: Counter[tuple[str, str]] = Counter()  # 2xx answers that reached callers
        self.calls: Counter[tuple[str, str, str, str]] = Counter()  # (service, op, acct, outcome)
        self._server = _Server((host, port), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="proxy", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- configuration and counters -----------------------------------------------------------

    def add(self, *rules: Rule) -> None:
        with self._lock:
            self._rules.extend(rules)

    def reset(
        self, quotas: Mapping[str, Quota] | None = None, *, latency_s: float | None = None
    ) -> None:
        """Forget rules and counters and set ``quotas`` (``{"ssm:SendCommand": Quota(...)}``)
        and, when given, the latency (learnt credentials stay: they are still valid)."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.faults.clear()
            self.succeeded.clear()
            self.calls.clear()
            self._buckets.clear()
            self._timelines.clear()
            self._quotas = dict(quotas or {})
            if latency_s is not None:
                self.latency_s = latency_s

    def count(self, operation: str, account: str | None = None, *, what: str = "requests") -> int:
        counter: Counter[Any] = getattr(self, what)
        return sum(
            n
            for key, n in counter.items()
            if key[1] == operation and (account is None or key[0] == account)
        )

    def fired(self, rule_name: str) -> int:
        return sum(n for key, n in self.faults.items() if key[2] == rule_name)

    def snapshot(self) -> dict[str, Any]:
        """The benchmarks' view: calls by outcome, quota timelines, quotas."""
        with self._lock:
            return {
                "now": time.monotonic(),
                "calls": [
                    {"service": s, "operation": o, "account": a, "outcome": r, "count": n}
                    for (s, o, a, r), n in sorted(self.calls.items())
                ],
                "timelines": {
                    api: {
                        "first": t.first,
                        "last_ok": t.last_ok,
                        "ok": t.ok,
                        "throttled": t.throttled,
                    }
                    for api, t in self._timelines.items()
                },
                "quotas": {api: [q.rate, q.burst] for api, q in self._quotas.items()},
            }

    # -- the request path ---------------------------------------------------------------------

    def _caller(self, access_key: str) -> str:
        with self._lock:
            known = self._keys.get(access_key)
        if known is not None:
            return known
        account = self._account_of(access_key) if self._account_of else OPS_ACCOUNT
        with self._lock:
            self._keys.setdefault(access_key, account)
        return account

    def parse(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Request:
        scope = signature(headers.get("authorization", ""))
        if scope is None:
            return Request(method, path, headers, body, "", "", UNSIGNED)
        caller = self._caller(scope.access_key)
        return Request(method, path, headers, body, scope.service, scope.access_key, caller)

    def _admit(self, request: Request) -> bool:
        """Take a token for (account, api); True when the request may go on."""
        quota = self._quotas.get(request.api)
        if quota is None:
            return True
        now = time.monotonic()
        line = self._timelines.setdefault(request.api, _Timeline())
        if line.first is None:
            line.first = now
        key = (request.account, request.api)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(quota.rate, quota.burst, float(quota.burst), now)
        granted = bucket.take(now)
        if not granted:
            line.throttled += 1
        return granted

    def _record(self, request: Request, outcome: str) -> None:
        with self._lock:
            self.calls[
                (request.service or "unknown", request.operation, request.account, outcome)
            ] += 1
            line = self._timelines.get(request.api)
            if line is not None and outcome == "ok":
                line.ok += 1
                line.last_ok = time.monotonic()

    def _connection(self) -> http.client.HTTPConnection:
        if not self._keep_alive:
            return http.client.HTTPConnection(*self._upstream, timeout=60)
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(*self._upstream, timeout=60)
            self._local.connection = connection
        return connection

    def _forward(self, request: Request) -> Reply:
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        for attempt in range(2 if self._keep_alive else 1):
            connection = self._connection()
            try:
                connection.request(request.method, request.path, body=request.body, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt or not self._keep_alive:
                    raise
                continue  # the emulator closed a kept-alive connection: once more, fresh
            finally:
                if not self._keep_alive:
                    connection.close()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return Reply(response.status, kept, body)
        raise AssertionError("unreachable")

    def _learn(self, request: Request, response: Reply) -> None:
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

    def handle(self, request: Request) -> Reply:
        with self._lock:
            self.requests[(request.account, request.operation)] += 1
            admitted = self._admit(request)
            rule = next((r for r in self._rules if r.decide(request)), None) if admitted else None
            if rule is not None:
                self.faults[(request.account, request.operation, rule.name)] += 1
            latency = self.latency_s
        if not admitted:
            self._record(request, "throttled")
            code = throttling_code(request.service, request.headers)
            return error_response(request, 400, code, "Rate exceeded")
        if latency:
            time.sleep(latency)
        response = (
            rule.action(request, lambda: self._forward(request))
            if rule is not None
            else self._forward(request)
        )
        self._learn(request, response)
        self._record(request, "ok" if response.status < 400 else f"http{response.status}")
        if response.status < 300:
            with self._lock:
                self.succeeded[(request.account, request.operation)] += 1
        return response

    def _admin_route(self, method: str, route: str, body: bytes) -> Any:
        if route == "stats":
            return self.snapshot()
        if route == "reset":
            raw = json.loads(body or b"{}")
            quotas = {api: Quota(float(r), int(b)) for api, (r, b) in raw.get("quotas", {}).items()}
            latency_s = float(raw.get("latency_ms", 0)) / 1000.0
            self.reset(quotas, latency_s=latency_s)
            return {"quotas": raw.get("quotas", {}), "latency_ms": latency_s * 1000}
        return self._admin(method, route, body) if self._admin is not None else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: botocore pools its connections
            disable_nagle_algorithm = True  # headers and body are separate writes

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet: one line per request would drown what the callers report."""

            def _reply(self, response: Reply) -> None:
                try:
                    self.send_response(response.status)
                    for name, value in response.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the caller is gone (e.g. it was killed)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path.startswith(ADMIN_PREFIX):
                    route = self.path[len(ADMIN_PREFIX) :].split("?", 1)[0]
                    result = proxy._admin_route(self.command, route, body)
                    payload = json.dumps(result).encode()
                    status = 200 if result is not None else 404
                    self._reply(Reply(status, [("Content-Type", "application/json")], payload))
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._reply(proxy.handle(proxy.parse(self.command, self.path, headers, body)))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve  # noqa: N815

        return Handler
