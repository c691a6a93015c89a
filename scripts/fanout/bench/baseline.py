"""The original pattern the product replaces, as a Lambda handler (the benchmarks' baseline).

As in the source blog post: one loop over the records and their entries; for each entry an
AssumeRole, a new boto3 client and one call (CloudFront: one path, a random CallerReference);
boto3's defaults for retries (legacy mode); no rate limiting, no partial batch response. An
exception fails the whole batch, so SQS redelivers every record of it, including the entries
that already ran.

The SSM variant (for B2) is the cross-account SSM source's handler in the same style, given
the envelope's targets; its comment carries the job token the worker would use, so duplicated
commands can be counted per job.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Final

import boto3

from handler.api import DEFAULT_TARGET_ROLE_NAME, parse_message

__all__ = ["cloudfront_handler", "reset", "ssm_handler"]

ROLE_NAME: Final = DEFAULT_TARGET_ROLE_NAME
_sts: Any = None


def reset() -> None:
    """A new execution environment: boto3's default session and the STS client are rebuilt."""
    global _sts  # noqa: PLW0603 - module-level client, as in the original
    _sts = None
    boto3.DEFAULT_SESSION = None


def _sts_client() -> Any:
    global _sts  # noqa: PLW0603
    if _sts is None:
        _sts = boto3.client("sts")
    return _sts


def _assumed_client(service: str, account: str) -> Any:
    credentials = _sts_client().assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{ROLE_NAME}", RoleSessionName="cross_acct_lambda"
    )["Credentials"]
    new_client: Any = boto3.client  # the service is a runtime value, not a literal
    return new_client(
        service,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def cloudfront_handler(event: dict[str, Any], context: Any) -> None:  # noqa: ARG001 - Lambda
    for record in event["Records"]:
        for entry in json.loads(record["body"])["entries"]:
            client = _assumed_client("cloudfront", entry["aws_account_id"])
            client.create_invalidation(
                DistributionId=entry["cloudfront_distribution_id"],
                InvalidationBatch={
                    "Paths": {"Quantity": 1, "Items": [entry["invalidation_path"]]},
                    "CallerReference": str(uuid.uuid4()),
                },
            )


def ssm_handler(event: dict[str, Any], context: Any) -> None:  # noqa: ARG001 - Lambda
    region = os.environ.get("AWS_REGION", "us-east-1")
    for record in event["Records"]:
        # Parsed with the worker's parser only to name each job by the worker's job key.
        envelope = parse_message(
            record["body"], message_id=record["messageId"], default_region=region
        )
        for job in envelope.jobs:
            client = _assumed_client("ssm", job.account)
            client.send_command(
                DocumentName=job.params["document_name"],
                InstanceIds=list(job.params["instance_ids"]),
                Parameters=dict(job.params.get("parameters", {})),
                Comment=f"[fanout:{job.key[:16]}] baseline",
            )
