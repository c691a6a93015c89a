"""``fanout emulator``: a running, seeded emulator and the variables that reach it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from typing import Any

import boto3
import pytest

pytestmark = pytest.mark.integration


def run_emulator(*args: str) -> tuple[list[str], dict[str, str], int]:
    """``fanout emulator`` in its own process until it is ready, then Ctrl-C: its comment
    lines, its exports, its exit code."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FANOUT_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "fanout", "emulator", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
        # As a script's background job starts it (`fanout emulator &`): SIGINT ignored. Ctrl-C
        # (or `kill -INT`) must stop it all the same.
        preexec_fn=_ignore_sigint,  # noqa: PLW1509 - a signal disposition, before exec
    )
    assert process.stdout is not None
    comments: list[str] = []
    exports: dict[str, str] = {}
    try:
        for line in process.stdout:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = shlex.split(value)[0]
            else:
                comments.append(line.rstrip("\n"))
            if line.startswith("# Ctrl-C"):
                break
        attributes = sqs_of(exports).get_queue_attributes(
            QueueUrl=exports["FANOUT_QUEUE_URL"], AttributeNames=["All"]
        )["Attributes"]
        exports["_visibility"] = attributes["VisibilityTimeout"]
        exports["_dlq_arn"] = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)
    return comments, exports, code


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def sqs_of(exports: dict[str, str]) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=exports["AWS_ENDPOINT_URL"],
        region_name=exports["AWS_REGION"],
        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=exports["AWS_SESSION_TOKEN"],
    )


@pytest.mark.timeout(90)
def test_the_printed_exports_reach_the_seeded_queues() -> None:
    """GIVEN ``fanout emulator`` running in its own process
    WHEN its ``export`` lines are used to build an SQS client
    THEN the work queue exists with a short visibility timeout and a redrive policy to the DLQ,
    the seeded resources have the ids the sample events name, and Ctrl-C stops the emulator
    with exit code 0."""
    comments, exports, code = run_emulator("--accounts", "111111111111")

    assert exports["_visibility"] == "5"
    assert exports["_dlq_arn"].endswith(":fanout-dlq")
    assert exports["ALLOWED_ACCOUNT_IDS"] == "111111111111"
    assert exports["DEAD_LETTER_QUEUE_URL"] == exports["FANOUT_DLQ_URL"]
    assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    [seeded] = [c for c in comments if c.startswith("#   111111111111:")]
    assert "E2QWRUHEXAMPLE" in seeded
    assert "i-0123456789abcdef0" in seeded
    assert code == 0


@pytest.mark.timeout(90)
def test_on_every_interface_with_random_ids() -> None:
    """GIVEN ``fanout emulator --host 0.0.0.0 --random-ids``
    WHEN its exports are used THEN the emulator answers on 127.0.0.1 too, it says where it
    listens, and no seeded id is one of the sample events'."""
    comments, exports, code = run_emulator(
        "--accounts",
        "111111111111",
        "--host",
        "0.0.0.0",  # noqa: S104 - every interface is what this test is about
        "--random-ids",
    )

    assert exports["_visibility"] == "5"
    assert any(c.startswith("#   listening on 0.0.0.0:") for c in comments)
    assert not any("E2QWRUHEXAMPLE" in c for c in comments)
    assert code == 0
