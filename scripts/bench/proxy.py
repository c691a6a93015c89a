"""A counting, rate-limiting HTTP proxy in front of the moto server.

Every AWS request of a benchmark goes through it, so API calls are counted on the "AWS" side,
whoever made them (the worker's own botocore sessions, a baseline, botocove). Operations given a
quota get a token bucket per (account, operation); a request without a token is answered with
the throttling error the real service returns, which botocore and the worker recognise.

The account of a request comes from its access key: the proxy runs in the same process as moto
(see ``host.py``), so moto's own ``get_account_id_from`` maps an assumed-role key to its account.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import botocore.session

__all__ = ["OperationResolver", "ProxyServer", "Quota", "start_proxy"]

ADMIN_PREFIX: Final = "/_bench/"
_CREDENTIAL_RE: Final = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/aws4_request")
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}
)
_XML_THROTTLE: Final = (
    "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
    "<Message>Rate exceeded</Message></Error><RequestId>{}</RequestId></ErrorResponse>"
)


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


class OperationResolver:
    """Names the operation of a signed AWS request from its target header, body or REST path."""

    def __init__(self) -> None:
        self._session = botocore.session.get_session()
        self._lock = threading.Lock()

    @cache  # noqa: B019 - one resolver per process; the cache is the point
    def protocol(self, service: str) -> str:
        with self._lock:
            return str(self._session.get_service_model(service).protocol)

    @cache  # noqa: B019 - as above
    def _routes(self, service: str) -> list[tuple[str, re.Pattern[str], str, int]]:
        """(method, path regex, operation, literal length) for REST protocols."""
        with self._lock:
            model = self._session.get_service_model(service)
        routes = []
        for name in model.operation_names:
            http = model.operation_model(name).http
            uri = str(http["requestUri"]).split("?", 1)[0]
            literal = len(re.sub(r"\{[^}]*\}", "", uri))
            # {Id} is one segment, {Key+} any number of them.
            pattern = re.sub(r"\\\{[^}]*\\\+\\\}", ".+", re.escape(uri))
            pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", pattern)
            routes.append((str(http["method"]), re.compile(f"^{pattern}$"), name, literal))
        # The most specific route first: /distribution/{Id}/invalidation before /distribution/{Id}.
        return sorted(routes, key=lambda r: -r[3])

    def operation(
        self, service: str, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> str:
        target = headers.get("x-amz-target") or headers.get("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1]
        protocol = self.protocol(service)
        if protocol in ("query", "ec2"):
            action = parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
            return action or parse_qs(urlsplit(path).query).get("Action", ["?"])[0]
        bare = urlsplit(path).path
        for route_method, pattern, name, _ in self._routes(service):
            if route_method == method and pattern.match(bare):
                return name
        return f"{method} {bare}"


@dataclass
class _Timeline:
    """When a quota'd operation was first asked for and last granted, in the host's clock."""

    first: float | None = None
    last_ok: float | None = None
    ok: int = 0
    throttled: int = 0


@dataclass
class _State:
    upstream: tuple[str, int]
    account_of: Callable[[str], str]
    resolver: OperationResolver = field(default_factory=OperationResolver)
    quotas: dict[str, Quota] = field(default_factory=dict)
    # Added to every proxied request: models the network and service time of real AWS, which
    # the in-process emulator lacks (its calls cost CPU, not latency).
    latency_s: float = 0.0
    buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    counts: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    timelines: dict[str, _Timeline] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)

    def account(self, access_key: str) -> str:
        account = self.accounts.get(access_key)
        if account is None:
            account = self.account_of(access_key)
            self.accounts[access_key] = account
        return account

    def admit(self, api: str, account: str) -> bool:
        """Take a token for (account, api); True when the request may go to AWS."""
        quota = self.quotas.get(api)
        now = time.monotonic()
        with self.lock:
            line = self.timelines.setdefault(api, _Timeline()) if quota else None
            if line is not None and line.first is None:
                line.first = now
            if quota is None:
                return True
            bucket = self.buckets.get((account, api))
            if bucket is None:
                bucket = _Bucket(quota.rate, quota.burst, float(quota.burst), now)
                self.buckets[(account, api)] = bucket
            granted = bucket.take(now)
            if line is not None and not granted:
                line.throttled += 1
            return granted

    def record(self, api: str, account: str, outcome: str) -> None:
        service, operation = api.split(":", 1)
        with self.lock:
            self.counts[(service, operation, account, outcome)] += 1
            line = self.timelines.get(api)
            if line is not None and outcome == "ok":
                line.ok += 1
                line.last_ok = time.monotonic()

    def reset(self, quotas: Mapping[str, Quota], latency_s: float) -> None:
        with self.lock:
            self.counts.clear()
            self.buckets.clear()
            self.timelines.clear()
            self.quotas = dict(quotas)
            self.latency_s = latency_s

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "now": time.monotonic(),
                "calls": [
                    {"service": s, "operation": o, "account": a, "outcome": r, "count": n}
                    for (s, o, a, r), n in sorted(self.counts.items())
                ],
                "timelines": {
                    api: {
                        "first": t.first,
                        "last_ok": t.last_ok,
                        "ok": t.ok,
                        "throttled": t.throttled,
                    }
                    for api, t in self.timelines.items()
                },
                "quotas": {api: [q.rate, q.burst] for api, q in self.quotas.items()},
            }

    def connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            self.local.conn = conn
        return conn

    def drop_connection(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
        self.local.conn = None


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of new connections from many threads must not be refused

    def __init__(
        self,
        address: tuple[str, int],
        state: _State,
        admin: Callable[[str, str, bytes], Any] | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.state = state
        # Extra admin routes served by the host (e.g. effects read from moto's state).
        self.admin = admin

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore pools its connections
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: ProxyServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: one line per request would drown the benchmark's output."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith(ADMIN_PREFIX):
            self._admin(body)
            return
        state = self.server.state
        match = _CREDENTIAL_RE.search(self.headers.get("Authorization", ""))
        access_key, service = match.groups() if match else ("", "unknown")
        account = state.account(access_key) if access_key else "anonymous"
        headers = dict(self.headers.items())
        try:
            operation = state.resolver.operation(service, self.command, self.path, headers, body)
        except Exception:  # noqa: BLE001 - an unknown service must still be proxied
            operation = "?"
        api = f"{service}:{operation}"
        if not state.admit(api, account):
            state.record(api, account, "throttled")
            self._throttle(service)
            return
        if state.latency_s:
            time.sleep(state.latency_s)
        status, reason, response_headers, data = self._forward(headers, body)
        state.record(api, account, "ok" if status < 400 else f"http{status}")
        self.send_response(status, reason)
        for name, value in response_headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        state = self.server.state
        clean = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        for attempt in range(2):
            conn = state.connection()
            try:
                conn.request(self.command, self.path, body=body, headers=clean)
                response = conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                state.drop_connection()  # the server closed a kept-alive connection
                if attempt:
                    raise
                continue
            return response.status, response.reason, response.getheaders(), data
        raise AssertionError("unreachable")

    def _throttle(self, service: str) -> None:
        request_id = str(uuid.uuid4())
        protocol = self.server.state.resolver.protocol(service)
        headers = {"x-amzn-RequestId": request_id}
        if protocol in ("json", "rest-json"):
            data = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
            headers["Content-Type"] = "application/x-amz-json-1.1"
            headers["x-amzn-ErrorType"] = "ThrottlingException"
        else:  # query, rest-xml, ec2
            data = _XML_THROTTLE.format(request_id)
            headers["Content-Type"] = "text/xml"
        payload = data.encode()
        self.send_response(400, "Bad Request")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _admin(self, body: bytes) -> None:
        state = self.server.state
        route = self.path[len(ADMIN_PREFIX) :].split("?", 1)[0]
        result: Any
        if route == "stats":
            result = state.snapshot()
        elif route == "reset":
            raw = json.loads(body or b"{}")
            quotas = {api: Quota(float(r), int(b)) for api, (r, b) in raw.get("quotas", {}).items()}
            latency_s = float(raw.get("latency_ms", 0)) / 1000.0
            state.reset(quotas, latency_s)
            result = {"quotas": raw.get("quotas", {}), "latency_ms": latency_s * 1000}
        elif self.server.admin is not None:
            result = self.server.admin(self.command, route, body)
        else:
            result = None
        payload = json.dumps(result).encode()
        self.send_response(200 if result is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def start_proxy(
    upstream: tuple[str, int],
    account_of: Callable[[str], str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    admin: Callable[[str, str, bytes], Any] | None = None,
) -> ProxyServer:
    """Serve the proxy on a daemon thread; ``server.url`` is its endpoint."""
    server = ProxyServer((host, port), _State(upstream, account_of), admin)
    threading.Thread(target=server.serve_forever, name="bench-proxy", daemon=True).start()
    return server
