"""What a signed AWS request says on the wire, and errors shaped as each protocol returns them.

Shared by the emulator's own patches (``middleware``) and by the HTTP proxy (``proxy``): both
need the SigV4 credential scope (access key, region, service), the operation a request names,
and error answers that botocore parses like the real service's.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Final
from urllib.parse import parse_qs, urlsplit

import botocore.session
from botocore.exceptions import UnknownServiceError

__all__ = [
    "Reply",
    "Signature",
    "error_reply",
    "operation_name",
    "protocol_of",
    "signature",
    "throttling_code",
]

_CREDENTIAL: Final = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")
_JSON_PROTOCOLS: Final = frozenset({"json", "rest-json"})


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, headers in order, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


@dataclass(frozen=True, slots=True)
class Signature:
    """The SigV4 credential scope of a request."""

    access_key: str
    region: str
    service: str  # the signing name: sts, ssm, cloudfront, sqs, dynamodb, ...


def signature(authorization: str) -> Signature | None:
    match = _CREDENTIAL.search(authorization)
    return Signature(*match.groups()) if match else None


_models_lock = threading.Lock()
_session = botocore.session.get_session()


@cache
def _model(service: str) -> botocore.model.ServiceModel | None:
    with _models_lock:  # botocore's loader is not thread-safe on first use
        try:
            return _session.get_service_model(service)
        except UnknownServiceError:
            return None


@cache
def protocol_of(service: str) -> str | None:
    model = _model(service)
    return str(model.protocol) if model is not None else None


@cache
def _routes(service: str) -> tuple[tuple[str, re.Pattern[str], str], ...]:
    """(method, path regex, operation) of a REST service, the most specific route first."""
    model = _model(service)
    if model is None:
        return ()
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        uri = str(http["requestUri"]).split("?", 1)[0]
        literal = len(re.sub(r"\{[^}]*\}", "", uri))
        # {Id} is one segment, {Key+} any number of them.
        pattern = re.sub(r"\\\{[^}]*\\\+\\\}", ".+", re.escape(uri))
        pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", pattern)
        routes.append((literal, str(http["method"]), re.compile(f"^{pattern}$"), name))
    # /distribution/{Id}/invalidation before /distribution/{Id}.
    routes.sort(key=lambda route: -route[0])
    return tuple((method, pattern, name) for _, method, pattern, name in routes)


def operation_name(
    service: str, method: str, path: str, headers: Mapping[str, str], body: bytes
) -> str:
    """The operation a request names: its target header, its ``Action``, or its REST route.

    ``headers`` have lower-case names. Unknown: ``"<METHOD> <path>"``.
    """
    target = headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    if "x-www-form-urlencoded" in headers.get("content-type", "") or "Action=" in path:
        form = parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action") or parse_qs(urlsplit(path).query).get("Action")
        if action:
            return action[0]
    bare = urlsplit(path).path
    for route_method, pattern, name in _routes(service):
        if route_method == method and pattern.match(bare):
            return name
    return f"{method} {bare}"


def _protocol(service: str, headers: Mapping[str, str]) -> str:
    known = protocol_of(service)
    if known is not None:
        return known
    if "x-amz-target" in headers:
        return "json"
    return "rest-json" if "json" in headers.get("content-type", "") else "query"


def throttling_code(service: str, headers: Mapping[str, str]) -> str:
    """JSON services answer ThrottlingException; query and XML ones (STS, CloudFront) Throttling."""
    return "ThrottlingException" if _protocol(service, headers) in _JSON_PROTOCOLS else "Throttling"


def error_reply(
    service: str,
    headers: Mapping[str, str],
    status: int,
    code: str,
    message: str,
    *,
    type_prefix: str = "",
) -> Reply:
    """An error in the request's protocol, shaped as botocore parses the service's own.

    ``type_prefix`` (e.g. ``com.amazonaws.sqs``) qualifies the JSON ``__type`` as services
    whose model has a namespace do; botocore strips it.
    """
    request_id = str(uuid.uuid4())
    fault = "Sender" if status < 500 else "Receiver"
    if _protocol(service, headers) in _JSON_PROTOCOLS:
        error_type = f"{type_prefix}#{code}" if type_prefix else code
        body = json.dumps({"__type": error_type, "message": message}).encode()
        content_type = (
            "application/x-amz-json-1.0"
            if service in ("sqs", "dynamodb")
            else ("application/x-amz-json-1.1")
        )
        return Reply(
            status,
            [
                ("Content-Type", content_type),
                ("x-amzn-RequestId", request_id),
                ("x-amzn-ErrorType", code),
                # awsQueryCompatible services (SQS) read the error code from here.
                ("x-amzn-query-error", f"{code};{fault}"),
            ],
            body,
        )
    protocol = _protocol(service, headers)
    root = ET.Element("Response" if protocol == "ec2" else "ErrorResponse")
    # EC2 nests its errors one level deeper and spells the request id RequestID.
    parent = ET.SubElement(root, "Errors") if protocol == "ec2" else root
    error = ET.SubElement(parent, "Error")
    if protocol != "ec2":
        ET.SubElement(error, "Type").text = fault
    ET.SubElement(error, "Code").text = code
    ET.SubElement(error, "Message").text = message
    ET.SubElement(root, "RequestID" if protocol == "ec2" else "RequestId").text = request_id
    xml = b'<?xml version="1.0"?>' + ET.tostring(root)
    return Reply(status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], xml)
