"""A claimer process: many threads claim the same keys with conditional writes, at one instant.

Run as ``python -m tests.integration.claims --endpoint URL --table T --keys N --threads M
--owner NAME --ready FILE --go FILE``: it builds its clients, touches ``--ready``, waits for
``--go`` to exist (so every process starts at the same instant), then each thread tries every
key in the same order and prints one JSON line: the keys this process was granted, per thread.

A key is claimed by one of four conditional writes, chosen by its number, so that each kind is
raced: UpdateItem / PutItem ``attribute_not_exists(pk)``, DeleteItem ``attribute_exists(pk)``
on a pre-seeded item, and a one-item TransactWriteItems Put ``attribute_not_exists(pk)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

KINDS = ("update", "put", "delete", "transact")


def kind_of(n: int) -> str:
    return KINDS[n % len(KINDS)]


def key_name(n: int) -> str:
    return f"claim-{n:04d}"


def claim(ddb: Any, table: str, n: int, owner: str) -> bool:
    """One conditional write; True when this caller won the key."""
    key = {"pk": {"S": key_name(n)}}
    kind = kind_of(n)
    try:
        if kind == "update":
            ddb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET #o = :me",
                ConditionExpression="attribute_not_exists(pk)",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": owner}},
            )
        elif kind == "put":
            ddb.put_item(
                TableName=table,
                Item={**key, "owner": {"S": owner}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        elif kind == "delete":
            ddb.delete_item(TableName=table, Key=key, ConditionExpression="attribute_exists(pk)")
        else:
            ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": table,
                            "Item": {**key, "owner": {"S": owner}},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                ]
            )
    except ddb.exceptions.ConditionalCheckFailedException:
        return False
    except ddb.exceptions.TransactionCanceledException:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--go", type=Path, required=True)
    args = parser.parse_args()

    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    # A loaded machine serves slowly: never time out (a timed-out claim that then succeeded
    # would be retried, refused, and look lost).
    config = Config(read_timeout=600, retries={"mode": "standard", "max_attempts": 1})
    clients = [
        session.client("dynamodb", endpoint_url=args.endpoint, config=config)
        for _ in range(args.threads)
    ]
    granted: list[list[str]] = [[] for _ in range(args.threads)]
    start = threading.Barrier(args.threads + 1)

    def run(t: int) -> None:
        start.wait()
        owner = f"{args.owner}/{t}"
        for n in range(args.keys):
            if claim(clients[t], args.table, n, owner):
                granted[t].append(key_name(n))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(args.threads)]
    for thread in threads:
        thread.start()
    args.ready.touch()
    while not args.go.exists():
        time.sleep(0.001)
    start.wait()
    for thread in threads:
        thread.join()
    sys.stdout.write(json.dumps({"owner": args.owner, "granted": granted}) + "\n")


if __name__ == "__main__":
    main()
