"""``fanout emulator``: a running, seeded emulator and the variables that reach it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

import boto3
import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(60)
def test_the_printed_exports_reach_the_seeded_queues() -> None:
    """GIVEN ``fanout emulator`` running in its own process
    WHEN its ``export`` lines are used to build an SQS client
    THEN the work queue exists with a short visibility timeout and a redrive policy to the DLQ,
    and Ctrl-C stops the emulator with exit code 0."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FANOUT_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "fanout", "emulator", "--accounts", "111111111111"],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    exports: dict[str, str] = {}
    try:
        for line in process.stdout:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = shlex.split(value)[0]
            if line.startswith("# Ctrl-C"):
                break
        sqs = boto3.client(
            "sqs",
            endpoint_url=exports["AWS_ENDPOINT_URL"],
            region_name=exports["AWS_REGION"],
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=exports["AWS_SESSION_TOKEN"],
        )
        attributes = sqs.get_queue_attributes(
            QueueUrl=exports["FANOUT_QUEUE_URL"], AttributeNames=["All"]
        )["Attributes"]
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)

    assert attributes["VisibilityTimeout"] == "5"
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(":fanout-dlq")
    assert exports["ALLOWED_ACCOUNT_IDS"] == "111111111111"
    assert exports["DEAD_LETTER_QUEUE_URL"] == exports["FANOUT_DLQ_URL"]
    assert code == 0
