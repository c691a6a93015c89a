"""The emulator's CPU shortcuts in moto change what it costs, never what it answers.

In-process moto (``mock_aws``) with the shortcuts installed, as ``emulator_app`` installs them in
the emulator's process. What DynamoDB answers with them is checked through the emulator in
tests/integration/test_emulator_dynamodb.py; here, what only shows in-process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from fanout.emulator import moto_costs
from tests.unit.test_ledger import create_ledger_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def aws() -> Iterator[None]:
    moto_costs.install()
    with mock_aws():
        yield


def test_a_repeated_update_expression_is_parsed_once(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN an expression text not seen before
    WHEN three items are updated with it
    THEN moto's tokenizer ran once for it (moto alone runs it twice per update), and every item
    holds the update."""
    from moto.dynamodb.parsing.tokens import ExpressionTokenizer  # noqa: PLC0415 - moto internals

    ddb: DynamoDBClient = boto3.client("dynamodb", region_name=REGION)
    ddb.create_table(
        TableName="t",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    marker = f"m{uuid.uuid4().hex[:8]}"
    tokenized: list[str] = []
    make_list = ExpressionTokenizer.make_list.__func__  # type: ignore[attr-defined]

    def counting(cls: Any, text: str) -> Any:
        if marker in text:
            tokenized.append(text)
        return make_list(cls, text)

    monkeypatch.setattr(ExpressionTokenizer, "make_list", classmethod(counting))

    for pk in ("a", "b", "c"):
        ddb.update_item(
            TableName="t",
            Key={"pk": {"S": pk}},
            UpdateExpression=f"SET {marker} = :v",
            ExpressionAttributeValues={":v": {"S": pk}},
        )

    assert len(tokenized) == 1
    for pk in ("a", "b", "c"):
        item = ddb.get_item(TableName="t", Key={"pk": {"S": pk}})["Item"]
        assert item == {"pk": {"S": pk}, marker: {"S": pk}}


def test_a_message_is_received_only_within_its_retention_period(aws: None) -> None:
    """GIVEN a queue retaining messages 60 s and one message in it
    WHEN it is received from with the message sent 2 minutes ago, then sent just now
    THEN the first receive gets nothing and the second gets the message (the retention check
    reads the queue's period directly, with moto's rule)."""
    from moto.sqs.models import sqs_backends  # noqa: PLC0415 - moto internals

    sqs: SQSClient = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="body")
    (message,) = sqs_backends[ACCOUNT][REGION].queues["q"]._messages

    message.sent_timestamp = int((time.time() - 120) * 1000)
    # moto marks a message received before it checks retention: visible again at once.
    expired = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages", [])
    message.sent_timestamp = int(time.time() * 1000)
    retained = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages", [])

    assert expired == []
    assert [m["Body"] for m in retained] == ["body"]


def test_a_query_of_the_table_looks_at_its_own_partition_only(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a table with three partitions of 7 items each (pk, sk)
    WHEN one partition is queried in pages of 3, newest first, with a filter, then another
    whole THEN the pages hold exactly that partition's items in range-key order, paged and
    filtered as DynamoDB does, while moto's item listing never held more than that partition
    (moto alone lists and sorts all 21 for every Query); a scan still sees all 21."""
    from moto.dynamodb.models.table import Table  # noqa: PLC0415 - moto internals

    ddb: DynamoDBClient = boto3.client("dynamodb", region_name=REGION)
    create_ledger_table("t")  # pk and sk, as the ledger's
    for pk in ("a", "b", "c"):
        for n in (4, 0, 6, 2, 5, 1, 3):  # written out of order
            item = {"pk": {"S": pk}, "sk": {"S": f"s{n}"}, "n": {"N": str(n)}}
            ddb.put_item(TableName="t", Item=item)
    listed: list[int] = []
    items_of = Table.all_items

    def listing(self: Any) -> Any:
        found = items_of(self)
        listed.append(len(found))
        return found

    monkeypatch.setattr(Table, "all_items", listing)

    pages: list[list[str]] = []
    start: dict[str, Any] | None = None
    while True:
        extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        page = ddb.query(
            TableName="t",
            KeyConditionExpression="pk = :pk",
            FilterExpression="n <> :skip",
            ExpressionAttributeValues={":pk": {"S": "b"}, ":skip": {"N": "3"}},
            ScanIndexForward=False,
            Limit=3,
            ConsistentRead=True,
            **extra,
        )
        pages.append([i["sk"]["S"] for i in page["Items"]])
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    whole = ddb.query(
        TableName="t",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "c"}},
    )["Items"]
    query_listings = list(listed)
    scanned = ddb.scan(TableName="t")["Items"]

    assert pages == [["s6", "s5", "s4"], ["s2", "s1"], ["s0"]]
    assert [(i["pk"]["S"], i["sk"]["S"]) for i in whole] == [("c", f"s{n}") for n in range(7)]
    assert query_listings
    assert max(query_listings) == 7
    assert len(scanned) == 21
