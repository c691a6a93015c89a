"""The emulator's DynamoDB is atomic per item and per transaction, as DynamoDB is.

Plain moto server checks a condition and writes in two steps: under load, two concurrent
conditional writes on one key both succeed. These tests race claimer processes (``claims``)
with many threads each, on a machine made busy on purpose, and require every key to be granted
exactly once; they would pass by luck on an idle machine without the emulator's lock, never on
a loaded one (docs/emulator.md has the figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from fanout.emulator import Emulator, fake_session
from tests.integration.claims import KINDS, key_name, kind_of

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEYS = 80
THREADS = 8
PROCESSES = 2
# Busy processes beside the claimers: the machine is loaded whatever else runs on it.
BUSY = max(2, os.cpu_count() or 2)
SWITCH_INTERVAL_S = 1e-5
TRANSFERS = 40


@pytest.fixture
def ddb(emulator: Emulator) -> DynamoDBClient:
    client: DynamoDBClient = fake_session("us-east-1").client(
        "dynamodb", endpoint_url=emulator.endpoint_url
    )
    return client


@pytest.fixture
def table(ddb: DynamoDBClient) -> Iterator[str]:
    name = f"atomic-{uuid.uuid4().hex[:12]}"
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    yield name
    ddb.delete_table(TableName=name)


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """Processes that spin for the length of the test, and an emulator (this process) whose
    threads switch every 10 us instead of 5 ms: requests interleave as finely as a loaded
    machine can make them, so a race the emulator allowed would show on every run."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BUSY)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        for spinner in spinners:
            spinner.kill()
            spinner.wait(timeout=10)


def race(endpoint_url: str, table: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Run the claimer processes, release them at one instant; their reports."""
    go = tmp_path / "go"
    processes = []
    for p in range(PROCESSES):
        ready = tmp_path / f"ready-{p}"
        processes.append(
            (
                ready,
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.integration.claims",
                        *("--endpoint", endpoint_url, "--table", table),
                        *("--keys", str(KEYS), "--threads", str(THREADS)),
                        *("--owner", f"p{p}", "--ready", str(ready), "--go", str(go)),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    try:
        for ready, process in processes:
            while not ready.exists():
                assert process.poll() is None, "a claimer process died before the start"
                threading.Event().wait(0.01)
        go.touch()
        reports = []
        for _, process in processes:
            out, _ = process.communicate(timeout=240)
            assert process.returncode == 0
            reports.append(json.loads(out))
        return reports
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.kill()


def test_concurrent_conditional_writes_grant_each_key_exactly_once(
    emulator: Emulator,
    ddb: DynamoDBClient,
    table: str,
    busy_machine: None,
    tmp_path: Path,
) -> None:
    """GIVEN 80 keys (claimed by conditional UpdateItem, PutItem, DeleteItem or a one-item
    TransactWriteItems) and a machine kept busy by spinning processes
    WHEN two processes of eight threads each try every key, released at the same instant
    THEN every key is granted exactly once, and the stored owner is the one who was granted."""
    for n in range(KEYS):
        if kind_of(n) == "delete":  # a delete claims an item that exists
            ddb.put_item(TableName=table, Item={"pk": {"S": key_name(n)}})

    reports = race(emulator.endpoint_url, table, tmp_path)

    grants: Counter[str] = Counter()
    owner_of: dict[str, str] = {}
    for report in reports:
        for t, keys in enumerate(report["granted"]):
            grants.update(keys)
            owner_of.update((key, f"{report['owner']}/{t}") for key in keys)
    not_once = {key_name(n): grants[key_name(n)] for n in range(KEYS) if grants[key_name(n)] != 1}
    assert not_once == {}, f"keys granted other than once: {not_once}"
    items = {i["pk"]["S"]: i for i in ddb.scan(TableName=table, ConsistentRead=True)["Items"]}
    for n in range(KEYS):
        key = key_name(n)
        if kind_of(n) == "delete":
            assert key not in items
        else:
            assert items[key]["owner"]["S"] == owner_of[key], key
    assert {kind_of(n) for n in range(KEYS)} == set(KINDS)


def test_concurrent_transfers_keep_the_total_and_never_overdraw(
    ddb: DynamoDBClient, table: str, busy_machine: None
) -> None:
    """GIVEN accounts a=40, b=0
    WHEN 16 threads race 80 transactions "a -= 1 if a >= 1; b += 1", on a busy machine
    THEN exactly 40 succeed, a ends at 0 and b at 40: no transfer is half-applied or doubled."""
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": str(TRANSFERS)}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "b"}, "n": {"N": "0"}})
    session = fake_session("us-east-1")
    endpoint = ddb.meta.endpoint_url
    clients = [session.client("dynamodb", endpoint_url=endpoint) for _ in range(16)]
    succeeded: list[int] = []
    start = threading.Barrier(len(clients))

    def transfer(client: Any) -> None:
        start.wait()
        for _ in range(2 * TRANSFERS // len(clients)):
            try:
                client.transact_write_items(
                    TransactItems=[
                        {
                            "Update": {
                                "TableName": table,
                                "Key": {"pk": {"S": "a"}},
                                "UpdateExpression": "SET n = n - :one",
                                "ConditionExpression": "n >= :one",
                                "ExpressionAttributeValues": {":one": {"N": "1"}},
                            }
                        },
                        {
                            "Update": {
                                "TableName": table,
                                "Key": {"pk": {"S": "b"}},
                                "UpdateExpression": "SET n = n + :one",
                                "ExpressionAttributeValues": {":one": {"N": "1"}},
                            }
                        },
                    ]
                )
            except client.exceptions.TransactionCanceledException:
                continue
            succeeded.append(1)

    threads = [threading.Thread(target=transfer, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    balances = {
        i["pk"]["S"]: int(i["n"]["N"])
        for i in ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    }
    assert (len(succeeded), balances) == (TRANSFERS, {"a": 0, "b": TRANSFERS})


def _put(table: str, pk: str, condition: str | None = None) -> dict[str, Any]:
    put: dict[str, Any] = {"TableName": table, "Item": {"pk": {"S": pk}, "v": {"S": "new"}}}
    if condition:
        put["ConditionExpression"] = condition
    return {"Put": put}


def test_a_failed_condition_cancels_the_whole_transaction_with_a_reason_per_item(
    ddb: DynamoDBClient, table: str
) -> None:
    """GIVEN items "kept" (v=old) and "gone"
    WHEN a transaction puts "fresh", updates "kept" on a condition that does not hold (asking
    ALL_OLD) and deletes "gone"
    THEN it is cancelled with one reason per item, in order: None, ConditionalCheckFailed with
    the item as it is, None; and nothing was written."""
    ddb.put_item(TableName=table, Item={"pk": {"S": "kept"}, "v": {"S": "old"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "gone"}})

    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=[
                _put(table, "fresh", "attribute_not_exists(pk)"),
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "kept"}},
                        "UpdateExpression": "SET v = :new",
                        "ConditionExpression": "v = :other",
                        "ExpressionAttributeValues": {
                            ":new": {"S": "new"},
                            ":other": {"S": "other"},
                        },
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {"Delete": {"TableName": table, "Key": {"pk": {"S": "gone"}}}},
            ]
        )

    response = caught.value.response
    assert response["Error"]["Code"] == "TransactionCanceledException"
    assert response["CancellationReasons"] == [  # type: ignore[typeddict-item]
        {"Code": "None"},
        {
            "Code": "ConditionalCheckFailed",
            "Message": "The conditional request failed",
            "Item": {"pk": {"S": "kept"}, "v": {"S": "old"}},
        },
        {"Code": "None"},
    ]
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    assert sorted(items, key=lambda i: i["pk"]["S"]) == [
        {"pk": {"S": "gone"}},
        {"pk": {"S": "kept"}, "v": {"S": "old"}},
    ]


def test_an_item_the_service_refuses_midway_undoes_the_writes_before_it(
    ddb: DynamoDBClient, table: str
) -> None:
    """GIVEN an item whose n is a string
    WHEN a transaction puts a new item, then adds a number to that string
    THEN it is cancelled (ValidationError for the second item) and the first item is not there."""
    ddb.put_item(TableName=table, Item={"pk": {"S": "text"}, "n": {"S": "x"}})

    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=[
                _put(table, "fresh"),
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "text"}},
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )

    reasons = caught.value.response["CancellationReasons"]  # type: ignore[typeddict-item]
    assert [r["Code"] for r in reasons] == ["None", "ValidationError"]
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "fresh"}})


def test_a_refused_update_of_a_new_item_leaves_no_item(ddb: DynamoDBClient, table: str) -> None:
    """GIVEN no item "ghost"
    WHEN a transaction puts "fresh" and updates "ghost" with an expression the service refuses
    for it (n = n + 1: n does not exist)
    THEN it is cancelled (ValidationError for the update) and neither item is there: the key
    the emulator creates to validate the update once is undone with the transaction."""
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=[
                _put(table, "fresh"),
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "ghost"}},
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )

    reasons = caught.value.response["CancellationReasons"]  # type: ignore[typeddict-item]
    assert [r["Code"] for r in reasons] == ["None", "ValidationError"]
    for pk in ("fresh", "ghost"):
        assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": pk}})


def test_updates_of_new_and_existing_items_write_what_the_expression_says(
    ddb: DynamoDBClient, table: str
) -> None:
    """GIVEN an item "old" with n=1 and tags, and no item "new"
    WHEN one transaction updates both with one expression (if_not_exists, arithmetic, REMOVE)
    THEN each item holds exactly what the expression computes from what it held."""
    ddb.put_item(
        TableName=table,
        Item={"pk": {"S": "old"}, "n": {"N": "1"}, "gone": {"S": "x"}, "first": {"S": "a"}},
    )
    update = {
        "TableName": table,
        "UpdateExpression": (
            "SET n = if_not_exists(n, :zero) + :one, #first = if_not_exists(#first, :b) REMOVE gone"
        ),
        "ExpressionAttributeNames": {"#first": "first"},
        "ExpressionAttributeValues": {":zero": {"N": "0"}, ":one": {"N": "1"}, ":b": {"S": "b"}},
    }

    ddb.transact_write_items(
        TransactItems=[
            {"Update": {**update, "Key": {"pk": {"S": "old"}}}},
            {"Update": {**update, "Key": {"pk": {"S": "new"}}}},
        ]
    )

    def item(pk: str) -> dict[str, Any]:
        return dict(ddb.get_item(TableName=table, Key={"pk": {"S": pk}})["Item"])

    assert item("old") == {"pk": {"S": "old"}, "n": {"N": "2"}, "first": {"S": "a"}}
    assert item("new") == {"pk": {"S": "new"}, "n": {"N": "1"}, "first": {"S": "b"}}


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("SET a = :v, a = :v", "Two document paths overlap"),
        ("SET pk = :v", "Cannot update attribute pk. This attribute is part of the key"),
        ("SET a = :v SET b = :v", 'The "SET" section can only be used once'),
    ],
)
def test_an_expression_the_service_refuses_is_refused_every_time(
    ddb: DynamoDBClient, table: str, expression: str, reason: str
) -> None:
    """GIVEN an update expression DynamoDB refuses whatever the item (overlapping paths, a key
    attribute, a clause twice)
    WHEN it is sent three times, on a new item and an existing one
    THEN every answer is the ValidationError that names why, and no item changes (the emulator
    remembers only expressions that passed these checks)."""
    ddb.put_item(TableName=table, Item={"pk": {"S": "there"}, "a": {"S": "kept"}})

    for pk in ("new", "there", "new"):
        with pytest.raises(ClientError) as caught:
            ddb.update_item(
                TableName=table,
                Key={"pk": {"S": pk}},
                UpdateExpression=expression,
                ExpressionAttributeValues={":v": {"S": "changed"}},
            )
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert reason in caught.value.response["Error"]["Message"]

    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "new"}})
    there = ddb.get_item(TableName=table, Key={"pk": {"S": "there"}})["Item"]
    assert there == {"pk": {"S": "there"}, "a": {"S": "kept"}}


def test_conditions_that_hold_write_every_item(ddb: DynamoDBClient, table: str) -> None:
    """GIVEN an empty table WHEN a transaction puts two items on attribute_not_exists
    THEN both are there."""
    ddb.transact_write_items(
        TransactItems=[
            _put(table, "one", "attribute_not_exists(pk)"),
            _put(table, "two", "attribute_not_exists(pk)"),
        ]
    )

    assert sorted(i["pk"]["S"] for i in ddb.scan(TableName=table)["Items"]) == ["one", "two"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [_put("{t}", "same"), {"Delete": {"TableName": "{t}", "Key": {"pk": {"S": "same"}}}}],
            "multiple operations on one item",
        ),
        ([_put("{t}", f"k{n}") for n in range(101)], "less than or equal to 100"),
        (
            [{**_put("{t}", "a"), "Delete": {"TableName": "{t}", "Key": {"pk": {"S": "a"}}}}],
            "can only contain one of",
        ),
    ],
    ids=["two operations on one item", "101 items", "two operations in one entry"],
)
def test_a_malformed_transaction_is_a_validation_error_and_writes_nothing(
    ddb: DynamoDBClient, table: str, items: list[dict[str, Any]], message: str
) -> None:
    """GIVEN a transaction the service refuses before it starts
    WHEN it is sent THEN ValidationException (with the service's reason) and no item."""
    concrete = json.loads(json.dumps(items).replace("{t}", table))

    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(TransactItems=concrete)

    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert message in caught.value.response["Error"]["Message"]
    assert ddb.scan(TableName=table)["Items"] == []


def test_a_repeated_client_request_token_applies_once(ddb: DynamoDBClient, table: str) -> None:
    """GIVEN a counter at 0 and a transaction "n += 1" with ClientRequestToken T
    WHEN it is sent twice, then T is sent with another request
    THEN both first calls succeed, n is 1, and the third is IdempotentParameterMismatch."""
    ddb.put_item(TableName=table, Item={"pk": {"S": "c"}, "n": {"N": "0"}})
    increment = {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": "c"}},
            "UpdateExpression": "SET n = n + :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    token = uuid.uuid4().hex

    ddb.transact_write_items(TransactItems=[increment], ClientRequestToken=token)
    ddb.transact_write_items(TransactItems=[increment], ClientRequestToken=token)
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(TransactItems=[_put(table, "other")], ClientRequestToken=token)

    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "c"}}, ConsistentRead=True)["Item"]
    assert item["n"] == {"N": "1"}


def test_transactions_never_run_motos_whole_table_copy(
    ddb: DynamoDBClient, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN moto's own transact_write_items made to fail (it deep-copies every table it
    touches: O(table size) per call)
    WHEN a transaction runs through the emulator THEN it succeeds: moto's was never called."""
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415 - moto internals

    def whole_table_copy(*_: Any, **__: Any) -> None:
        raise AssertionError("moto's transact_write_items ran")

    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", whole_table_copy)

    ddb.transact_write_items(TransactItems=[_put(table, "one", "attribute_not_exists(pk)")])

    assert ddb.get_item(TableName=table, Key={"pk": {"S": "one"}})["Item"]["v"] == {"S": "new"}
