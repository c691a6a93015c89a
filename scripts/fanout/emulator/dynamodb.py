"""DynamoDB: every request under one lock, and a TransactWriteItems that is all-or-nothing.

moto's server evaluates a ``ConditionExpression`` and then writes, in separate steps, on
whichever thread serves the request: two concurrent conditional writes on one key can both
succeed. Real DynamoDB is atomic per item. Serialising every DynamoDB request (reads too: moto
updates items in place, so a read could see half an update) makes each one atomic.

moto's ``transact_write_items`` deep-copies every table it touches for rollback (O(table size)
per call) and writes each item as it goes. Here a transaction is validated, then every condition
is checked against the current items, and only when all hold are the writes applied, under the
same lock, with a copy of just the items it touches to undo a write the service would refuse
midway. ``ClientRequestToken`` makes a repeat idempotent for ten minutes, as the service does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fanout.emulator.middleware import Call, Forward, Handler, Head, ServiceError
from fanout.emulator.wire import Reply

__all__ = ["MAX_TRANSACTION_ITEMS", "TOKEN_WINDOW_SECONDS", "DynamoDBAtomicity"]

TARGET_PREFIX: Final = "DynamoDB_20120810."
MAX_TRANSACTION_ITEMS: Final = 100
TOKEN_WINDOW_SECONDS: Final = 600.0
_OPERATIONS: Final = ("ConditionCheck", "Put", "Delete", "Update")
_ERROR_PREFIX: Final = "com.amazonaws.dynamodb.v20120810"
_JSON: Final = [("Content-Type", "application/x-amz-json-1.0")]
# Re-entrant: a transaction calls the backend's own put/update/delete under it.
_LOCK: Final = threading.RLock()


@dataclass(frozen=True, slots=True)
class _Write:
    """One item of a transaction, validated: its table, key and operation."""

    kind: str  # ConditionCheck | Put | Delete | Update
    op: dict[str, Any]
    table: Any  # moto.dynamodb.models.Table
    key: dict[str, Any]
    hash_key: Any  # moto DynamoType
    range_key: Any


@dataclass(frozen=True, slots=True)
class _Remembered:
    fingerprint: str
    reply: Reply
    expires: float


_TOKENS: Final[dict[tuple[str, str, str], _Remembered]] = {}


def _moto_error(exc: Exception) -> Reply:
    """A moto DynamoDB exception, answered as moto's server answers it."""
    status = int(getattr(exc, "code", 400))
    return Reply(status, list(exc.get_headers()), exc.get_body().encode())  # type: ignore[attr-defined]


def _validation(message: str) -> ServiceError:
    return ServiceError(400, "ValidationException", message, type_prefix=_ERROR_PREFIX)


class DynamoDBAtomicity:
    """The patch: one lock for all DynamoDB requests; our own TransactWriteItems."""

    name = "dynamodb-atomicity"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # moto's state is process-wide, so are the lock and the tokens: two emulators in one
        # process serve the same tables.
        self.lock = _LOCK
        self._clock = clock
        self._tokens = _TOKENS

    def handler(self, head: Head) -> Handler | None:
        if not head.target.startswith(TARGET_PREFIX):
            return None
        if head.target == TARGET_PREFIX + "TransactWriteItems":
            return self._transact
        return self._serialised

    def close(self) -> None:
        """Nothing runs in the background."""

    def _serialised(self, _call: Call, forward: Forward) -> Reply:
        with self.lock:
            return forward()

    # -- TransactWriteItems --------------------------------------------------------------------

    def _transact(self, call: Call, _forward: Forward) -> Reply:
        from moto.core.exceptions import JsonRESTError  # noqa: PLC0415 - moto internals
        from moto.dynamodb.models import dynamodb_backends  # noqa: PLC0415

        body = call.json
        backend = dynamodb_backends[call.account][call.region]
        with self.lock:
            try:
                return self._transact_locked(call, backend, body)
            except JsonRESTError as exc:
                return _moto_error(exc)

    def _transact_locked(self, call: Call, backend: Any, body: dict[str, Any]) -> Reply:
        writes = _validate(backend, body)
        token = body.get("ClientRequestToken")
        scope = (call.account, call.region, str(token))
        fingerprint = hashlib.sha256(
            json.dumps(
                {k: v for k, v in body.items() if k != "ClientRequestToken"}, sort_keys=True
            ).encode()
        ).hexdigest()
        if token is not None:
            repeat = self._repeat(scope, fingerprint)
            if repeat is not None:
                return repeat
        reply = _run(backend, writes, body)
        if token is not None and reply.status == 200:
            self._tokens[scope] = _Remembered(
                fingerprint, reply, self._clock() + TOKEN_WINDOW_SECONDS
            )
        return reply

    def _repeat(self, scope: tuple[str, str, str], fingerprint: str) -> Reply | None:
        """The first answer to this token, or IdempotentParameterMismatch if the request differs."""
        now = self._clock()
        for stale in [s for s, r in self._tokens.items() if r.expires <= now]:
            del self._tokens[stale]
        remembered = self._tokens.get(scope)
        if remembered is None:
            return None
        if remembered.fingerprint != fingerprint:
            raise ServiceError(
                400,
                "IdempotentParameterMismatchException",
                "The request uses the same client token as a previous, but non-identical "
                "request. Do not reuse a client token with different requests, unless the "
                "requests are identical.",
                type_prefix=_ERROR_PREFIX,
            )
        return remembered.reply


def _restore(write: _Write, before: Any) -> None:
    """Put back the item as it was before this transaction wrote it (moto's table storage)."""
    items = write.table.items
    if write.range_key is not None:
        if before is None:
            items[write.hash_key].pop(write.range_key, None)
        else:
            items[write.hash_key][write.range_key] = before
    elif before is None:
        items.pop(write.hash_key, None)
    else:
        items[write.hash_key] = before


def _consumed(writes: list[_Write], body: dict[str, Any]) -> dict[str, Any]:
    """The response: ConsumedCapacity when asked (2 write units per item, as for items up to
    1 KB in a transaction)."""
    if body.get("ReturnConsumedCapacity") not in ("TOTAL", "INDEXES"):
        return {}
    units: dict[str, float] = {}
    for write in writes:
        units[write.op["TableName"]] = units.get(write.op["TableName"], 0.0) + 2.0
    return {
        "ConsumedCapacity": [
            {"TableName": table, "CapacityUnits": n, "WriteCapacityUnits": n}
            for table, n in units.items()
        ]
    }


def _validate(backend: Any, body: dict[str, Any]) -> list[_Write]:
    """Every check the service makes before it looks at an item (all ValidationException,
    or ResourceNotFoundException for a table that does not exist)."""
    from moto.dynamodb.exceptions import (  # noqa: PLC0415 - moto internals
        MultipleTransactionsException,
        TooManyTransactionsException,
    )

    items = body.get("TransactItems")
    if not isinstance(items, list) or not items:
        raise _validation(
            "1 validation error detected: Value null at 'transactItems' failed to satisfy "
            "constraint: Member must not be null"
        )
    if len(items) > MAX_TRANSACTION_ITEMS:
        raise TooManyTransactionsException()
    writes = [_validate_item(backend, item) for item in items]
    seen: set[tuple[str, str]] = set()
    for write in writes:
        identity = (str(write.op["TableName"]), json.dumps(write.key, sort_keys=True))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
    return writes


def _key(table: Any, kind: str, op: dict[str, Any]) -> dict[str, Any]:
    """The item's key: from ``Key``, or for a Put from the item's own key attributes."""
    from moto.dynamodb.responses import validate_put_has_empty_keys  # noqa: PLC0415

    if kind != "Put":
        key: dict[str, Any] = op.get("Key") or {}
        if len(key) != (2 if table.range_key_attr is not None else 1):
            raise _validation("The provided key element does not match the schema")
        return key
    attributes = op.get("Item") or {}
    key = {table.hash_key_attr: attributes.get(table.hash_key_attr)}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attributes.get(table.range_key_attr)
    missing = [name for name, value in key.items() if value is None]
    if missing:
        raise _validation(
            f"One or more parameter values were invalid: Missing the key {missing[0]} in the item"
        )
    validate_put_has_empty_keys(attributes, table)
    return key


def _validate_item(backend: Any, item: Any) -> _Write:
    """One operation on one item, with expressions that parse and names that are all used."""
    from moto.dynamodb.comparisons import (  # noqa: PLC0415 - moto internals
        create_condition_expression_parser,
    )
    from moto.dynamodb.exceptions import (  # noqa: PLC0415
        ExpressionAttributeValuesEmpty,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.parsing.expressions import (  # type: ignore[attr-defined]  # noqa: PLC0415
        ExpressionAttributeName,
        UpdateExpressionParser,
    )
    from moto.dynamodb.responses import validate_attributes_used  # noqa: PLC0415

    kinds = [k for k in item if k in _OPERATIONS] if isinstance(item, dict) else []
    if len(kinds) != 1 or len(item) != 1:
        raise TransactWriteSingleOpException()
    kind = kinds[0]
    op: dict[str, Any] = item[kind]
    table = backend.get_table(op.get("TableName"))  # ResourceNotFoundException
    if op.get("ExpressionAttributeValues") == {}:
        raise ExpressionAttributeValuesEmpty()
    names = op.get("ExpressionAttributeNames")
    key = _key(table, kind, op)
    hash_key, range_key = backend.get_keys_value(table, key)  # schema check
    if kind == "ConditionCheck" and not op.get("ConditionExpression"):
        raise _validation("The ConditionCheck operation requires a ConditionExpression")
    parser = create_condition_expression_parser(
        op.get("ConditionExpression"), names or {}, op.get("ExpressionAttributeValues") or {}
    )
    parser.parse()
    used = list(parser.expr_attr_names_found)
    if kind == "Update":
        if not op.get("UpdateExpression"):
            raise _validation("The Update operation requires an UpdateExpression")
        tree = UpdateExpressionParser.make(op["UpdateExpression"])
        used += [
            clause.get_attribute_name_placeholder()
            for clause in tree.find_clauses([ExpressionAttributeName])
        ]
    validate_attributes_used(names, used, validation_error_prefix=False)
    return _Write(kind, op, table, key, hash_key, range_key)


def _run(backend: Any, writes: list[_Write], body: dict[str, Any]) -> Reply:
    """Check every condition first; write only when all hold."""
    from moto.core.exceptions import JsonRESTError  # noqa: PLC0415 - moto internals
    from moto.dynamodb.comparisons import get_filter_expression  # noqa: PLC0415
    from moto.dynamodb.exceptions import TransactionCanceledException  # noqa: PLC0415

    reasons: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
    for write in writes:
        current = write.table.get_item(write.hash_key, write.range_key)
        condition = write.op.get("ConditionExpression")
        if condition is None or get_filter_expression(
            condition,
            write.op.get("ExpressionAttributeNames"),
            write.op.get("ExpressionAttributeValues"),
        ).expr(current):
            reasons.append((None, None, None))
            continue
        old = None
        if write.op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
            old = current.to_json()["Attributes"]
        reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
    if any(code is not None for code, _, _ in reasons):
        raise_reply = TransactionCanceledException(reasons)
        return _moto_error(raise_reply)
    undo = [(w, copy.deepcopy(w.table.get_item(w.hash_key, w.range_key))) for w in writes]
    for n, write in enumerate(writes):
        try:
            _apply(backend, write)
        except JsonRESTError as exc:
            # The service refuses such an item before writing any: cancel, undo ours (this
            # one too: _apply may have created its key).
            for done, before in undo[: n + 1]:
                _restore(done, before)
            failed: list[tuple[str | None, str | None, dict[str, Any] | None]] = [
                (None, None, None)
            ] * len(writes)
            failed[n] = ("ValidationError", str(getattr(exc, "message", exc)), None)
            return _moto_error(TransactionCanceledException(failed))
    return Reply(200, list(_JSON), json.dumps(_consumed(writes, body)).encode())


def _apply(backend: Any, write: _Write) -> None:
    name = write.op["TableName"]
    if write.kind == "Put":
        backend.put_item(name, write.op["Item"])
    elif write.kind == "Delete":
        backend.delete_item(name, write.key)
    elif write.kind == "Update":
        table = write.table
        if table.stream_shard is None and table.get_item(write.hash_key, write.range_key) is None:
            # moto validates an update of a new item twice (against an empty item, then the
            # created one): create it first so it validates once. A refused update is undone
            # with the rest of the transaction. (Not on a table with a stream: that would
            # record an extra insert.)
            table.put_item(write.key)
        backend.update_item(
            name,
            write.key,
            update_expression=write.op["UpdateExpression"],
            expression_attribute_names=write.op.get("ExpressionAttributeNames") or {},
            expression_attribute_values=write.op.get("ExpressionAttributeValues") or {},
        )
