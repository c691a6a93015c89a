"""Helpers for unit tests: SQS records, Lambda context, resources in moto's accounts."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import boto3

from tasks.base import Call, Job

OPS_ACCOUNT = "123456789012"  # moto's default account: the worker's own
TARGET_ACCOUNTS = ("111111111111", "222222222222", "333333333333", "444444444444", "555555555555")
REGION = "us-east-1"


def client_in(account: str, service: str) -> Any:
    """A client acting as ``account`` (moto isolates resources by the assumed role's account)."""
    creds = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/seed", RoleSessionName="seed"
    )["Credentials"]
    return boto3.client(
        service,
        region_name=REGION,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def create_distribution(account: str) -> str:
    config = {
        "CallerReference": str(uuid.uuid4()),
        "Origins": {
            "Quantity": 1,
            "Items": [
                {
                    "Id": "origin",
                    "DomainName": "origin.example.com",
                    "CustomOriginConfig": {
                        "HTTPPort": 80,
                        "HTTPSPort": 443,
                        "OriginProtocolPolicy": "https-only",
                    },
                }
            ],
        },
        "DefaultCacheBehavior": {
            "TargetOriginId": "origin",
            "ViewerProtocolPolicy": "redirect-to-https",
            "MinTTL": 0,
            "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
        },
        "Comment": "fanout test",
        "Enabled": True,
    }
    response = client_in(account, "cloudfront").create_distribution(DistributionConfig=config)
    return str(response["Distribution"]["Id"])


def invalidations(account: str, distribution_id: str) -> list[dict[str, Any]]:
    """Every invalidation batch (paths, CallerReference) of a distribution."""
    cloudfront = client_in(account, "cloudfront")
    listing = cloudfront.list_invalidations(DistributionId=distribution_id)["InvalidationList"]
    return [
        cloudfront.get_invalidation(DistributionId=distribution_id, Id=item["Id"])["Invalidation"][
            "InvalidationBatch"
        ]
        for item in listing.get("Items", [])
    ]


def sqs_record(
    body: str, *, message_id: str | None = None, receive_count: int = 1
) -> dict[str, Any]:
    """One record in the shape Lambda's SQS event source delivers."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "handle-" + uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1700000000000",
            "SenderId": "AROAEXAMPLE:ops-center",
            "ApproximateFirstReceiveTimestamp": "1700000000001",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{OPS_ACCOUNT}:fanout-work",
        "awsRegion": REGION,
    }


def one_job_call(
    task: str,
    params: Any,
    *,
    account: str,
    region: str = REGION,
    request_id: str = "req-1",
    key: str = "0f6a3c528d1e4a7b9c412b7e5d9a1f01",
) -> Call:
    """A plugin call made for exactly one job (what plan() makes when nothing coalesces)."""
    job = Job(
        key=key,
        request_id=request_id,
        task=task,
        account=account,
        region=region,
        params=params,
        message_id="msg-1",
        index=0,
    )
    return Call(task=task, account=account, region=region, params=params, jobs=(job,))


def failures(response: Any) -> list[str]:
    """Message ids the handler reported as batch-item failures."""
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def v1_body(task: str, targets: list[dict[str, Any]], **extra: Any) -> str:
    return json.dumps({"version": 1, "task": task, "targets": targets, **extra})


def dead_letters() -> list[dict[str, Any]]:
    """Everything in the DLQ: body and fanout.* attributes."""
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="fanout-dlq")["QueueUrl"]
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return [
        {
            "body": m["Body"],
            **{k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()},
        }
        for m in messages
    ]


@dataclass
class FakeLambdaContext:
    remaining_ms: int = 60_000
    function_name: str = "fanout-worker"
    function_version: str = "$LATEST"
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{OPS_ACCOUNT}:function:fanout-worker"
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/fanout-worker"
    log_stream_name: str = "stream"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class ApiCalls:
    """Every AWS API call made in the test, with its parameters."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [params for _, op, params in self.calls if op == operation]

    def count(self, operation: str) -> int:
        return len(self.of(operation))
