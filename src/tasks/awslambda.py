"""``lambda.invoke``: invoke a function in the target account through the assumed role.

Cross-account invocation by role chaining (the preferred of the two ways): the worker assumes
the target role and calls Invoke there, so the function needs no resource-based policy naming
the ops account. An ARN given as ``function_name`` must name the target account and region: a
message cannot reach a function elsewhere by spelling another account into the ARN.

Invoke has no client token, so the plugin is not idempotent: only throttling (the request was
not executed) is retried in-function. ``Event`` invocations are queued by Lambda, which retries
a failing function itself (twice by default); ``RequestResponse`` waits for the function and
fails the job when the function reports an error. Keep ``RequestResponse`` for functions that
answer well within the worker's own timeout (the worker starts no call it cannot finish, but a
call it started and lost to a timeout could run again); use ``Event`` for longer work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from tasks.api import (
    TARGET,
    Access,
    Call,
    InvalidParamsError,
    RateLimit,
    Task,
    TaskContext,
    TaskFailedError,
    TaskResult,
    register,
)

PREVIEW_BYTES: Final = 1024  # of a RequestResponse payload kept in the result
ERROR_MESSAGE_CHARS: Final = 300  # of a function's errorMessage kept in the failure reason
INVOCATION_TYPES: Final = ("RequestResponse", "Event")

_NAME: Final = r"[A-Za-z0-9_-]{1,64}"
_QUALIFIER: Final = r"\$LATEST|[A-Za-z0-9_-]{1,128}"
# name | name:qualifier | account:function:name[:qualifier] | arn:...:function:name[:qualifier]
_FUNCTION_RE: Final = re.compile(
    r"(?:(?:arn:(?P<partition>aws[a-z-]*):lambda:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}):)?"
    r"(?P<account>[0-9]{12}):function:)?"
    rf"(?P<name>{_NAME})(?::(?P<qualifier>{_QUALIFIER}))?",
    re.ASCII,
)
# The same grammar for JSON Schema (no named groups); the plugin re-checks with fullmatch.
_FUNCTION_PATTERN: Final = "^" + re.sub(r"\?P<\w+>", "", _FUNCTION_RE.pattern) + "$"
_QUALIFIER_RE: Final = re.compile(_QUALIFIER, re.ASCII)


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """The parts of a function name, partial ARN or ARN (absent parts are None)."""

    name: str
    qualifier: str | None = None
    account: str | None = None
    region: str | None = None


def parse_function(value: str) -> FunctionRef:
    """Split ``function_name`` into its parts, or raise :class:`InvalidParamsError`."""
    match = _FUNCTION_RE.fullmatch(value)
    if match is None:
        raise InvalidParamsError(
            f"function_name {value[:140]!r} is not a function name, partial ARN or ARN"
        )
    return FunctionRef(
        name=match["name"],
        qualifier=match["qualifier"],
        account=match["account"],
        region=match["region"],
    )


def payload_preview(payload: bytes) -> tuple[str, bool]:
    """At most PREVIEW_BYTES of the payload as text, and whether it was cut."""
    truncated = len(payload) > PREVIEW_BYTES
    # A multi-byte character cut in half is dropped rather than shown as garbage.
    return payload[:PREVIEW_BYTES].decode("utf-8", errors="ignore"), truncated


def function_error_reason(function: str, kind: str, payload: bytes) -> str:
    """``Invoke: <function> failed (<Handled|Unhandled>): <errorType>: <errorMessage>``."""
    error_type, message = "", ""
    try:
        document = json.loads(payload)
    except ValueError:
        document = None
    if isinstance(document, dict):
        error_type = str(document.get("errorType", ""))
        message = str(document.get("errorMessage", ""))
    else:
        message = payload.decode("utf-8", errors="replace")
    message = " ".join(message.split())
    if len(message) > ERROR_MESSAGE_CHARS:
        message = message[: ERROR_MESSAGE_CHARS - 3] + "..."
    what = f"{error_type}: {message}" if error_type else message or "no error message"
    return f"Invoke: function {function} failed ({kind}): {what}"


@register
class InvokeTask(Task):
    name = "lambda.invoke"
    description = (
        "Invoke a Lambda function in the target account through the assumed role (Invoke); "
        "the result is Lambda's request id. A function error fails the job."
    )
    service = "lambda"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["function_name"],
        "properties": {
            "function_name": {
                "type": "string",
                "maxLength": 170,
                "pattern": _FUNCTION_PATTERN,
                "description": "Function name (my-function, my-function:alias), partial ARN "
                "(111111111111:function:my-function) or ARN in the target account and region.",
            },
            "payload": {
                "description": "The event passed to the function: any JSON value (default {}).",
            },
            "invocation_type": {
                "enum": list(INVOCATION_TYPES),
                "description": "RequestResponse (default): wait for the result, fail the job on "
                "a function error. Event: queue the event; Lambda retries failures itself.",
            },
            "qualifier": {
                "type": "string",
                "pattern": f"^({_QUALIFIER})$",
                "description": "Version or alias to invoke, e.g. live or 7 (default: "
                "unqualified, i.e. $LATEST).",
            },
        },
    }
    access = {TARGET: Access(actions=("lambda:InvokeFunction",))}
    rate = RateLimit(
        api="lambda:InvokeFunction",
        per_second=10.0,
        burst=10,
        source="Lambda quotas bound Invoke by the function's concurrency (synchronous requests "
        "per second: 10 x concurrency), not by a fixed rate; 10/s keeps the fan-out polite",
    )
    idempotent = False  # Invoke has no client token
    # A synchronous invoke answers when the function returns (up to 15 minutes); the worker's
    # own deadline still bounds what it starts. Use invocation_type Event for long work.
    read_timeout = 900

    def resource_arns(
        self, role: str, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        if params is None:
            return (f"arn:{partition}:lambda:*:{account}:function:*",)
        function = f"arn:{partition}:lambda:*:{account}:function:{self._ref(params).name}"
        # Invoking a version or alias is authorized on the qualified ARN.
        return (function, f"{function}:*")

    def check(self, params: Mapping[str, Any], *, account: str, region: str) -> None:
        ref = self._ref(params)
        if ref.account is not None and ref.account != account:
            raise self.fail(
                f"function_name is in account {ref.account}, not in the target account "
                f"{account}; target that account instead"
            )
        if ref.region is not None and ref.region != region:
            raise self.fail(
                f"function_name is in region {ref.region}, not in the target region "
                f"{region}; set the target's region"
            )
        qualifier = params.get("qualifier")
        if qualifier is not None and _QUALIFIER_RE.fullmatch(qualifier) is None:
            raise self.fail(f"qualifier {qualifier[:140]!r} is not a version or alias name")
        if ref.qualifier and qualifier and ref.qualifier != qualifier:
            raise self.fail(
                f"function_name names qualifier {ref.qualifier!r} but qualifier is {qualifier!r}"
            )

    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        params = call.params
        ref = self._ref(params)
        # Checked at parse time too; again here because a call never has to come from there.
        self.check(params, account=call.account, region=call.region)
        invocation_type = str(params.get("invocation_type", "RequestResponse"))
        request: dict[str, Any] = {
            "FunctionName": params["function_name"],
            "InvocationType": invocation_type,
            "Payload": json.dumps(params.get("payload", {}), separators=(",", ":")).encode(),
        }
        if params.get("qualifier"):
            request["Qualifier"] = params["qualifier"]
        response = ctx.client("lambda").invoke(**request)
        stream = response.get("Payload")
        payload: bytes = stream.read() if stream is not None else b""
        if response.get("FunctionError"):
            raise TaskFailedError(
                function_error_reason(ref.name, str(response["FunctionError"]), payload)
            )
        status = int(response.get("StatusCode", 0))
        detail: dict[str, Any] = {
            "status_code": status,
            "invocation_type": invocation_type,
            "executed_version": response.get("ExecutedVersion", ""),
        }
        if invocation_type == "RequestResponse":
            preview, truncated = payload_preview(payload)
            detail.update(payload_preview=preview, payload_truncated=truncated)
        request_id = str(response.get("ResponseMetadata", {}).get("RequestId", ""))
        return TaskResult(resource_id=request_id or f"status-{status}", detail=detail)

    @staticmethod
    def _ref(params: Mapping[str, Any]) -> FunctionRef:
        return parse_function(str(params["function_name"]))
