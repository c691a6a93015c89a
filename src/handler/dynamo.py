"""The ledger table's plumbing, shared by the job ledger and the request records: attribute
encoding, one lazily created client, and conditional writes - single items and
``TransactWriteItems`` of up to 100 items - whose failures are reported per item.

Every write the ledger makes is conditional; the correctness argument rests on DynamoDB
evaluating a condition and the write atomically per item, and a transaction all or nothing
(see docs/life-of-a-job.md, "Invariants"). A transaction cancelled because some items' conditions
failed names those items, with the item as it is (``ReturnValuesOnConditionCheckFailure=ALL_OLD``);
the other items are written again without them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from botocore.exceptions import ClientError

from handler.exceptions import own_resource_error
from handler.ledger import RECORD_TTL_SECONDS

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "MAX_TRANSACTION_ITEMS",
    "Item",
    "Table",
    "WriteResult",
    "chunks",
    "expires",
    "n",
    "read_bool",
    "read_n",
    "read_s",
    "s",
]

MAX_TRANSACTION_ITEMS: Final = 100  # DynamoDB's limit per TransactWriteItems
ROUNDS: Final = 6  # of a transaction whose items keep failing for other items' conditions
Item = Mapping[str, Any]
T = TypeVar("T")


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: float) -> dict[str, str]:
    return {"N": f"{value:.3f}"}


def expires(now: float) -> dict[str, str]:
    """The TTL attribute's value for an item written at ``now``."""
    return {"N": str(int(now) + RECORD_TTL_SECONDS)}


def read_s(item: Item, name: str) -> str | None:
    value = item.get(name, {}).get("S")
    return str(value) if value is not None else None


def read_n(item: Item, name: str) -> float | None:
    value = item.get(name, {}).get("N")
    return float(value) if value is not None else None


def read_bool(item: Item, name: str) -> bool:
    return bool(item.get(name, {}).get("BOOL", False))


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How one item of a transaction fared."""

    written: bool
    condition_failed: bool = False
    item: Item | None = None  # the item as found, when its condition failed (None: no item)


class Table:
    """One DynamoDB table, reached through a client created on first use (thread-safe).

    Every request the ledger makes goes through here, so errors are translated in one place
    (``own_resource_error``: a missing table or permission is a configuration error)."""

    def __init__(self, name: str, client_factory: Callable[[], DynamoDBClient]) -> None:
        self.name = name
        self._client_factory = client_factory
        self._client: DynamoDBClient | None = None
        self._lock = threading.Lock()

    def client(self) -> DynamoDBClient:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def _error(self, exc: ClientError) -> Exception:
        return own_resource_error(exc, f"ledger table {self.name}") or exc

    # --- reads --------------------------------------------------------------------------------
    def get(self, key: Item) -> Item | None:
        try:
            item: Item | None = (
                self.client()
                .get_item(TableName=self.name, Key=key, ConsistentRead=True)
                .get("Item")
            )
        except ClientError as exc:
            raise self._error(exc) from exc
        return item

    def partition(self, pk: str) -> list[Item]:
        """Every item under ``pk``, all pages."""
        items: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": s(pk)},
        }
        while True:
            try:
                page = self.client().query(**kwargs)
            except ClientError as exc:
                raise self._error(exc) from exc
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def batch_get(self, keys: Sequence[Item]) -> list[Item]:
        """The items found for ``keys`` (strongly consistent), retrying unprocessed keys."""
        found: list[Item] = []
        for chunk in chunks(list(keys), 100):  # BatchGetItem's limit
            pending: list[Item] = chunk
            while pending:
                request: dict[str, Any] = {self.name: {"Keys": pending, "ConsistentRead": True}}
                try:
                    response: Mapping[str, Any] = self.client().batch_get_item(RequestItems=request)
                except ClientError as exc:
                    raise self._error(exc) from exc
                found.extend(response.get("Responses", {}).get(self.name, []))
                unprocessed: Mapping[str, Any] = response.get("UnprocessedKeys", {})
                pending = list(unprocessed.get(self.name, {}).get("Keys", []))
        return found

    # --- writes -------------------------------------------------------------------------------
    def put(self, item: Item) -> None:
        try:
            self.client().put_item(TableName=self.name, Item=item)
        except ClientError as exc:
            raise self._error(exc) from exc

    def put_new(self, item: Item) -> bool:
        """PutItem unless an item with this key exists; whether this call wrote it."""
        try:
            self.client().put_item(
                TableName=self.name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise self._error(exc) from exc
        return True

    def update(
        self,
        key: Item,
        expression: str,
        values: Mapping[str, Any],
        *,
        condition: str | None = None,
    ) -> Item | None:
        """One UpdateItem; the item as written, or None when ``condition`` failed."""
        written, item = self.update_or_found(key, expression, values, condition=condition)
        return item if written else None

    def update_or_found(
        self,
        key: Item,
        expression: str,
        values: Mapping[str, Any],
        *,
        condition: str | None = None,
    ) -> tuple[bool, Item]:
        """One UpdateItem: (True, the item written) or (False, the item as found, if any)."""
        request = update_request(self.name, key, expression, values, condition)
        request["ReturnValues"] = "ALL_NEW"
        try:
            response = self.client().update_item(**request)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                found: Item = exc.response.get("Item") or {}  # type: ignore[assignment]
                return False, found
            raise self._error(exc) from exc
        return True, response.get("Attributes", {})

    def write_all(
        self,
        ops: Sequence[dict[str, Any]],
        extra: Sequence[dict[str, Any]] = (),
        *,
        atomic_retry: bool = True,
    ) -> list[WriteResult]:
        """Write ``ops`` (+ ``extra``, unconditional, whose outcome is not reported) in one
        transaction; one result per op. With ``atomic_retry``, ops that failed only because
        another op's condition failed (or a conflict) are written again without the failed."""
        results: list[WriteResult | None] = [None] * len(ops)
        remaining = list(range(len(ops)))
        for attempt in range(ROUNDS):
            if not remaining:
                break
            reasons = self._transact([ops[i] for i in remaining] + list(extra))
            if reasons is None:
                for i in remaining:
                    results[i] = WriteResult(written=True)
                break
            retry: list[int] = []
            conflict = False
            for i, reason in zip(remaining, reasons, strict=False):
                code = reason.get("Code", "None")
                if code == "ConditionalCheckFailed":
                    results[i] = WriteResult(False, condition_failed=True, item=reason.get("Item"))
                else:
                    conflict = conflict or code == "TransactionConflict"
                    retry.append(i)
            if not atomic_retry:
                break
            remaining = retry
            if conflict:
                time.sleep(0.02 * (attempt + 1))
        return [r or WriteResult(written=False) for r in results]

    def _transact(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """None when written; else the cancellation reason of every item, in order."""
        if len(items) == 1 and "Update" in items[0]:
            return self._single(items[0]["Update"])
        try:
            self.client().transact_write_items(TransactItems=list(items))  # type: ignore[arg-type]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons", [])  # type: ignore[assignment]
                return reasons
            raise self._error(exc) from exc
        return None

    def _single(self, update: dict[str, Any]) -> list[dict[str, Any]] | None:
        """One item: a plain conditional UpdateItem costs half a transactional write."""
        try:
            self.client().update_item(**update)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return [{"Code": "ConditionalCheckFailed", "Item": exc.response.get("Item")}]
            raise self._error(exc) from exc
        return None


def update_request(
    table: str,
    key: Item,
    expression: str,
    values: Mapping[str, Any],
    condition: str | None,
) -> dict[str, Any]:
    """An UpdateItem request (also a transaction's ``Update``), naming reserved words."""
    request: dict[str, Any] = {
        "TableName": table,
        "Key": dict(key),
        "UpdateExpression": expression,
        "ExpressionAttributeValues": dict(values),
    }
    text = expression + " " + (condition or "")
    names = {alias: name for alias, name in _RESERVED.items() if alias in text}
    if names:
        request["ExpressionAttributeNames"] = names
    if condition:
        request["ConditionExpression"] = condition
        request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return request


# DynamoDB reserved words the ledger's attributes use, always written through an alias.
_RESERVED: Final = {"#state": "state", "#region": "region"}
