"""The credential scanner the integration tier relies on must actually catch credentials."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.secret_scan import find_secrets


@pytest.mark.usefixtures("aws")
def test_scanner_finds_every_part_of_real_temporary_credentials() -> None:
    """GIVEN credentials issued by STS (moto) WHEN each part is logged as a JSON field
    THEN the scanner reports the key id, the secret and the session token."""
    creds = boto3.client("sts").assume_role(
        RoleArn="arn:aws:iam::111111111111:role/x", RoleSessionName="scan"
    )["Credentials"]

    assert find_secrets(json.dumps({"key": creds["AccessKeyId"]})) == ["access key id"]
    assert "secret access key" in find_secrets(
        json.dumps({"SecretAccessKey": creds["SecretAccessKey"]})
    )
    assert "session token" in find_secrets(f"token={creds['SessionToken']}")


def test_scanner_leaves_ordinary_worker_logs_alone() -> None:
    """GIVEN an audit line of the worker WHEN scanned THEN nothing is reported."""
    line = json.dumps(
        {
            "message": "job finished",
            "request_id": "req-1",
            "account": "111111111111",
            "resource_id": "I2J0I21PCUYOIK",
            "reason": "CreateInvalidation: Throttling: Rate exceeded",
        }
    )

    assert find_secrets(line) == []
