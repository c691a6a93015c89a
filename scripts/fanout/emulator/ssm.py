"""SSM ListCommands: Filters, MaxResults and NextToken, which moto ignores.

moto answers ListCommands with every command of the account and region (or the one named by
``CommandId``, or those on ``InstanceId``). The worker's recovery asks for the commands
``InvokedAfter`` a point in time and reads a bounded number of pages, so both the filters and
the paging change what it finds. Here moto's answer is filtered, ordered newest first and cut
into pages of ``MaxResults`` (at most 50).

Filter semantics, from the CommandFilter reference: ``InvokedAfter`` keeps commands requested at
or after the timestamp, ``InvokedBefore`` those requested before it, ``Status`` those with that
status (``TimedOut`` covers delivery and execution time-outs), ``DocumentName`` those of that
document, ``ExecutionStage`` ``Executing`` (not finished) or ``Complete``. Filters combine with
AND.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fanout.emulator.middleware import Call, Forward, Handler, Head, ServiceError
from fanout.emulator.wire import Reply

__all__ = ["MAX_RESULTS", "ListCommandsFilters", "SendCommandInstances"]

TARGET: Final = "AmazonSSM.ListCommands"
SEND_COMMAND: Final = "AmazonSSM.SendCommand"
MAX_RESULTS: Final = 50
STATUSES: Final = frozenset(
    {
        "Pending",
        "InProgress",
        "Success",
        "Cancelled",
        "Cancelling",
        "Failed",
        "TimedOut",
        "AccessDenied",
        "DeliveryTimedOut",
        "ExecutionTimedOut",
        "Incomplete",
        "NoInstancesInTag",
        "LimitExceeded",
    }
)
_EXECUTING: Final = frozenset({"Pending", "InProgress", "Cancelling"})
_STAGES: Final = frozenset({"Executing", "Complete"})

Predicate = Callable[[Mapping[str, Any]], bool]


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _timestamp(value: str) -> int:
    """Microseconds since the epoch, exactly (filters compare equal times as equal)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ServiceError(
            400,
            "InvalidFilterValue",
            f"{value} is not a valid timestamp (e.g. 2021-07-07T00:00:00Z)",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _requested(command: Mapping[str, Any]) -> int:
    """A command's RequestedDateTime (moto answers epoch seconds) in microseconds."""
    value = command.get("RequestedDateTime", 0)
    if isinstance(value, int | float):
        return round(value * 1_000_000)
    return _timestamp(str(value))


def _status_matches(wanted: str) -> Predicate:
    if wanted == "TimedOut":
        return lambda c: (
            str(c.get("Status")) in ("TimedOut", "DeliveryTimedOut", "ExecutionTimedOut")
        )
    return lambda c: c.get("Status") == wanted


def _predicate(key: str, value: str) -> Predicate:
    if key == "InvokedAfter":
        after = _timestamp(value)
        return lambda c: _requested(c) >= after
    if key == "InvokedBefore":
        before = _timestamp(value)
        return lambda c: _requested(c) < before
    if key == "Status":
        if value not in STATUSES:
            raise ServiceError(400, "InvalidFilterValue", f"{value} is not a valid command status")
        return _status_matches(value)
    if key == "DocumentName":
        return lambda c: c.get("DocumentName") == value
    if key == "ExecutionStage":
        if value not in _STAGES:
            raise ServiceError(
                400, "InvalidFilterValue", f"ExecutionStage must be one of {sorted(_STAGES)}"
            )
        executing = value == "Executing"
        return lambda c: (str(c.get("Status")) in _EXECUTING) == executing
    raise ServiceError(400, "InvalidFilterKey", f"{key} is not a valid filter key")


def _token(command: Mapping[str, Any]) -> str:
    position = {"t": _requested(command), "id": command.get("CommandId", "")}
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _after_token(token: str) -> tuple[int, str]:
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(position["t"]), str(position["id"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ServiceError(400, "InvalidNextToken", "The specified token isn't valid.") from exc


class ListCommandsFilters:
    """The patch: filters and pages moto's ListCommands answer."""

    name = "ssm-list-commands-filters"

    def handler(self, head: Head) -> Handler | None:
        return self._list_commands if head.target == TARGET else None

    def close(self) -> None:
        """Nothing runs in the background."""

    def _list_commands(self, call: Call, forward: Forward) -> Reply:
        request = call.json
        filters = request.get("Filters") or []
        if len(filters) > 5:
            raise ServiceError(400, "ValidationException", "Filters: at most 5 filters")
        predicates = [_predicate(str(f.get("key")), str(f.get("value"))) for f in filters]
        limit = int(request.get("MaxResults") or MAX_RESULTS)
        if not 1 <= limit <= MAX_RESULTS:
            raise ServiceError(
                400, "ValidationException", f"MaxResults must be between 1 and {MAX_RESULTS}"
            )
        after = _after_token(str(request["NextToken"])) if request.get("NextToken") else None
        reply = forward()
        if reply.status != 200:
            return reply
        commands = [
            c for c in json.loads(reply.body).get("Commands", []) if all(p(c) for p in predicates)
        ]
        # Newest first; the command id breaks ties so pages never overlap.
        commands.sort(key=lambda c: (_requested(c), str(c.get("CommandId", ""))), reverse=True)
        if after is not None:
            commands = [c for c in commands if (_requested(c), str(c.get("CommandId", ""))) < after]
        page = commands[:limit]
        document: dict[str, Any] = {"Commands": page}
        if len(commands) > limit:
            document["NextToken"] = _token(page[-1])
        # The body changed: moto's checksum header no longer applies.
        headers = [(k, v) for k, v in reply.headers if k.lower() != "x-amz-crc32"]
        return Reply(reply.status, headers, json.dumps(document).encode())


_sending = threading.local()
_installed = threading.Lock()
_done: list[bool] = []


def _install() -> None:
    """Wrap moto's target resolution once per process (idempotent)."""
    with _installed:
        if _done:
            return
        from moto.ssm.models import Command  # noqa: PLC0415 - moto internals

        resolve = Command._get_instance_ids_from_targets

        def instances_from_targets(self: Any) -> list[str]:
            if getattr(_sending, "active", False) and not self.targets:
                return []  # no Targets: the InstanceIds alone
            return list(resolve(self))

        Command._get_instance_ids_from_targets = instances_from_targets  # type: ignore[method-assign]
        _done.append(True)


class SendCommandInstances:
    """The patch: a command sent by InstanceIds runs on those instances only."""

    name = "ssm-send-command-instances"

    def __init__(self) -> None:
        _install()

    def handler(self, head: Head) -> Handler | None:
        return self._send_command if head.target == SEND_COMMAND else None

    def close(self) -> None:
        """Nothing runs in the background."""

    def _send_command(self, _call: Call, forward: Forward) -> Reply:
        _sending.active = True
        try:
            return forward()
        finally:
            _sending.active = False
