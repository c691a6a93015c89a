"""``fanout redrive`` moves messages only from a dead-letter queue back to its own queue.

The check reads ``--to``'s redrive policy: its ``deadLetterTargetArn`` must be ``--from``'s ARN.
Run through the real entry point against the emulator's queues.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from fanout.cli import main
from fanout.emulator import Organisation, create_queues
from tests.integration.test_redrive_cli import Depth, dead_letter

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration


def _one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fanout: error: "), err
    return lines[0]


def test_the_live_queue_into_its_dlq_is_refused_and_nothing_moves(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    depth: Depth,
) -> None:
    """GIVEN live work in the work queue (the mistake of issue 13: --from and --to swapped)
    WHEN ``fanout redrive --from WORK_QUEUE --to DLQ`` runs, with and without --dry-run
    THEN it exits 2 with one line saying the queues are the wrong way round, and the work stays
    in the work queue, visible (not even hidden by a scan)."""
    sqs.send_message(QueueUrl=aws_env.queue_url, MessageBody=json.dumps({"live": "work"}))

    for extra in ([], ["--dry-run"]):
        code = main(["redrive", "--from", aws_env.queue_url, "--to", aws_env.dlq_url, *extra])
        out, err = capsys.readouterr()

        assert code == 2
        line = _one_line_error(err)
        assert "wrong way round" in line
        assert "--force" in line
        assert out == ""
    assert depth(aws_env.queue_url) == (1, 0)
    assert depth(aws_env.dlq_url) == (0, 0)


def test_a_dlq_of_another_queue_is_refused(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    depth: Depth,
) -> None:
    """GIVEN a dead letter in the DLQ of another queue pair
    WHEN it is redriven --to this organisation's work queue
    THEN exit 2, the reason names the DLQ that --to's redrive policy names, nothing moves."""
    suffix = uuid.uuid4().hex[:12]
    other = create_queues(
        aws_env.endpoint_url, name=f"other-{suffix}", dlq_name=f"other-dlq-{suffix}"
    )
    sqs.send_message(QueueUrl=other.dlq_url, MessageBody="{}")

    code = main(["redrive", "--from", other.dlq_url, "--to", aws_env.queue_url])

    line = _one_line_error(capsys.readouterr().err)
    assert code == 2
    assert f"its redrive policy names {aws_env.dlq_arn}" in line
    assert depth(other.dlq_url) == (1, 0)
    assert depth(aws_env.queue_url) == (0, 0)


def test_a_destination_without_redrive_policy_is_refused(
    aws_env: Organisation, sqs: SQSClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN two queues without redrive policies
    WHEN one is redriven into the other
    THEN exit 2: --to has no redrive policy, so --from cannot be its dead-letter queue."""
    suffix = uuid.uuid4().hex[:12]
    first = sqs.create_queue(QueueName=f"plain-a-{suffix}")["QueueUrl"]
    second = sqs.create_queue(QueueName=f"plain-b-{suffix}")["QueueUrl"]

    code = main(["redrive", "--from", first, "--to", second, "--dry-run"])

    assert code == 2
    assert "--to has no redrive policy" in _one_line_error(capsys.readouterr().err)


def test_force_redrives_between_queues_the_check_would_refuse(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    read_queue: Callable[[str], list[dict[str, object]]],
) -> None:
    """GIVEN a dead letter in the DLQ of another queue pair
    WHEN it is redriven to this work queue with --force and --loop
    THEN it moves (the operator said so), exit 0."""
    suffix = uuid.uuid4().hex[:12]
    other = create_queues(
        aws_env.endpoint_url, name=f"forced-{suffix}", dlq_name=f"forced-dlq-{suffix}"
    )
    body = dead_letter(sqs, aws_env.with_queues(other))

    code = main(
        ["redrive", "--from", other.dlq_url, "--to", aws_env.queue_url, "--force", "--loop"]
    )

    capsys.readouterr()
    assert code == 0
    assert [m["Body"] for m in read_queue(aws_env.queue_url)] == [body]


def test_the_real_dlq_of_the_work_queue_passes_the_check(
    aws_env: Organisation, sqs: SQSClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a dead letter in the work queue's own DLQ
    WHEN ``fanout redrive --dry-run`` runs from it to the work queue
    THEN the check passes and the letter is listed (exit 0)."""
    dead_letter(sqs, aws_env)

    code = main(["redrive", "--from", aws_env.dlq_url, "--to", aws_env.queue_url, "--dry-run"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "would move 1" in out
