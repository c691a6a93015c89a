"""``fanout redrive``: dead letters back to the work queue, against the moto server's queues.

The dead letters are written as the worker writes them (``handler.deadletter``): the body, and
``fanout.*`` attributes with the reason; some also carry the ``fanout.attempt`` counter of a
deferred message that reached the DLQ through the queue's redrive policy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from botocore.awsrequest import AWSResponse

from fanout.cli import main
from fanout.emulator import Organisation
from fanout.redrive import redrive

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

ReadQueue = Callable[[str], list[dict[str, Any]]]
Depth = Callable[[str], tuple[int, int]]


def dead_letter(
    sqs: SQSClient,
    org: Organisation,
    *,
    task: str = "cloudfront.invalidate",
    reason: str = "CreateInvalidation: NoSuchDistribution: The specified distribution...",
    error_class: str = "TaskFailedError",
    request_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Put a dead letter into the org's DLQ the way the worker does; returns its body."""
    request_id = request_id or f"redrive-{uuid.uuid4().hex[:12]}"
    body = json.dumps(
        {
            "version": 1,
            "task": task,
            "request_id": request_id,
            "targets": [{"account": org.account_ids[0]}],
            "params": {"marker": uuid.uuid4().hex},
        }
    )
    attributes: dict[str, Any] = {
        f"fanout.{name}": {"DataType": "String", "StringValue": value}
        for name, value in {
            "error_class": error_class,
            "reason": reason,
            "task": task,
            "request_id": request_id,
            "targets": f"{org.account_ids[0]}/{org.region}",
            "source_message_id": str(uuid.uuid4()),
        }.items()
    }
    sqs.send_message(
        QueueUrl=org.dlq_url, MessageBody=body, MessageAttributes={**attributes, **(extra or {})}
    )
    return body


def redrive_cli(
    capsys: pytest.CaptureFixture[str], org: Organisation, *args: str
) -> tuple[int, dict[str, Any], str]:
    code = main(
        ["redrive", "--from", org.dlq_url, "--to", org.queue_url, "--output", "json", *args]
    )
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_without_filters_the_move_task_moves_every_dead_letter_back(
    aws_env: Organisation,
    sqs: SQSClient,
    capfd: pytest.CaptureFixture[str],
    read_queue: ReadQueue,
    settled: Callable[[str], dict[str, Any]],
) -> None:
    """GIVEN three dead letters
    WHEN ``fanout redrive`` runs without filters
    THEN it starts SQS's message-move task (no fallback note, no traceback anywhere), the task
    completes, every body is in the work queue with its attributes as they were (the move task
    keeps them), the DLQ is empty, and the exit code is 0."""
    bodies = {dead_letter(sqs, aws_env, task=t) for t in ("cloudfront.invalidate",) * 2}
    bodies.add(dead_letter(sqs, aws_env, task="ssm.send_command"))

    code = main(
        ["redrive", "--from", aws_env.dlq_url, "--to", aws_env.queue_url, "--output", "json"]
    )
    out, err = capfd.readouterr()
    result = json.loads(out)
    task = settled(aws_env.dlq_arn)

    assert code == 0
    assert (result["mode"], result["approximate_messages"]) == ("move-task", 3)
    assert result["task_handle"]
    assert "note" not in result
    assert "Traceback" not in out + err
    assert (task["Status"], task["ApproximateNumberOfMessagesMoved"]) == ("COMPLETED", 3)
    moved = read_queue(aws_env.queue_url)
    assert {m["Body"] for m in moved} == bodies
    assert all("fanout.reason" in m["MessageAttributes"] for m in moved)
    assert read_queue(aws_env.dlq_url) == []


def test_the_move_task_table_output_names_the_handle(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    settled: Callable[[str], dict[str, Any]],
) -> None:
    """GIVEN a dead letter WHEN ``fanout redrive`` runs without filters, table output
    THEN it says it started a message-move task and how to follow it."""
    dead_letter(sqs, aws_env)

    code = main(["redrive", "--from", aws_env.dlq_url, "--to", aws_env.queue_url])
    out = capsys.readouterr().out
    settled(aws_env.dlq_arn)

    assert code == 0
    assert "started a message-move task: about 1 message(s)" in out
    assert f"list-message-move-tasks --source-arn {aws_env.dlq_arn}" in out


def test_a_filtered_out_dead_letter_stays_in_the_dlq_and_is_visible_again(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    read_queue: ReadQueue,
    depth: Depth,
) -> None:
    """GIVEN a cloudfront.invalidate and an ssm.send_command dead letter
    WHEN ``fanout redrive --filter-task 'cloudfront.*'`` runs
    THEN only the invalidation moves; the SSM letter is still in the DLQ and visible at once
    (not hidden by the scan)."""
    moved = dead_letter(sqs, aws_env, task="cloudfront.invalidate")
    kept = dead_letter(sqs, aws_env, task="ssm.send_command")

    code, result, _ = redrive_cli(capsys, aws_env, "--filter-task", "cloudfront.*")

    assert code == 0
    assert (result["moved"], result["skipped"]) == (1, 1)
    assert depth(aws_env.dlq_url) == (1, 0)
    assert [m["Body"] for m in read_queue(aws_env.queue_url)] == [moved]
    assert [m["Body"] for m in read_queue(aws_env.dlq_url)] == [kept]


def test_dry_run_lists_what_would_move_and_changes_nothing(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    depth: Depth,
) -> None:
    """GIVEN two dead letters of different requests
    WHEN ``fanout redrive --dry-run --filter-request-id <the first>`` runs
    THEN the listing marks the first "would move" and the second "skipped", the work queue
    stays empty, and both letters are visible in the DLQ."""
    dead_letter(sqs, aws_env, request_id="release-1")
    dead_letter(sqs, aws_env, request_id="release-2")

    code, result, _ = redrive_cli(capsys, aws_env, "--dry-run", "--filter-request-id", "release-1")

    assert code == 0
    actions = {m["request_id"]: m["action"] for m in result["messages"]}
    assert actions == {"release-1": "would move", "release-2": "skipped"}
    assert (result["moved"], result["would_move"]) == (0, 1)
    assert depth(aws_env.queue_url) == (0, 0)
    assert depth(aws_env.dlq_url) == (2, 0)


def test_the_dry_run_table_shows_each_letter_and_its_reason(
    aws_env: Organisation, sqs: SQSClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a dead letter with a reason
    WHEN ``fanout redrive --dry-run`` runs with table output
    THEN a row shows "would move", its task, error class and reason, and the summary says
    nothing changed."""
    dead_letter(sqs, aws_env, reason="CreateInvalidation: NoSuchDistribution: gone")

    code = main(["redrive", "--from", aws_env.dlq_url, "--to", aws_env.queue_url, "--dry-run"])
    out = capsys.readouterr().out

    assert code == 0
    [row] = [line for line in out.splitlines() if "cloudfront.invalidate" in line]
    assert row.startswith("would move")
    assert "TaskFailedError" in row
    assert "NoSuchDistribution" in row
    assert "would move 1" in out
    assert "dry run: nothing changed" in out


def test_redrive_strips_the_fanout_attributes_and_the_attempt_counter(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    read_queue: ReadQueue,
) -> None:
    """GIVEN a dead letter with the worker's fanout.* attributes, a fanout.attempt counter of 4
    and a publisher's own attribute
    WHEN it is redriven
    THEN the work queue's copy has the same body, the publisher's attribute and the redrive
    mark: no reason, error class or attempt counter (a redrive starts attempts anew); and its
    tenant for SQS fair queues, the target's account, as MessageGroupId."""
    body = dead_letter(
        sqs,
        aws_env,
        extra={
            "fanout.attempt": {"DataType": "Number", "StringValue": "4"},
            "team": {"DataType": "String", "StringValue": "web"},
        },
    )

    code, _, _ = redrive_cli(capsys, aws_env, "--loop")

    assert code == 0
    [copy] = read_queue(aws_env.queue_url)
    assert copy["Body"] == body
    assert copy["MessageAttributes"] == {
        "team": {"DataType": "String", "StringValue": "web"},
        "fanout.redriven": {"DataType": "String", "StringValue": "true"},
    }
    assert copy["Attributes"].get("MessageGroupId") == aws_env.account_ids[0]


def test_filter_reason_is_a_regular_expression_over_reason_and_error_class(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    read_queue: ReadQueue,
    depth: Depth,
) -> None:
    """GIVEN a throttled, an access-denied and a bad-parameter dead letter
    WHEN ``fanout redrive --filter-reason 'Throttl|AccessDenied'`` runs
    THEN the first two move (one matched by its reason, one by its error class) and the
    third stays."""
    throttled = dead_letter(sqs, aws_env, reason="SendCommand: ThrottlingException: slow down")
    denied = dead_letter(sqs, aws_env, reason="AssumeRole refused", error_class="AccessDeniedError")
    dead_letter(sqs, aws_env, reason="paths[0] must match", error_class="InvalidParamsError")

    code, result, _ = redrive_cli(capsys, aws_env, "--filter-reason", "Throttl|AccessDenied")

    assert code == 0
    assert result["moved"] == 2
    assert {m["Body"] for m in read_queue(aws_env.queue_url)} == {throttled, denied}
    assert depth(aws_env.dlq_url) == (1, 0)


def test_max_moves_at_most_n_and_leaves_the_rest_visible(
    aws_env: Organisation,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    depth: Depth,
) -> None:
    """GIVEN five dead letters
    WHEN ``fanout redrive --max 2`` runs
    THEN exactly two move and three stay in the DLQ, visible."""
    for _ in range(5):
        dead_letter(sqs, aws_env)

    code, result, _ = redrive_cli(capsys, aws_env, "--max", "2")

    assert code == 0
    assert result["moved"] == 2
    assert depth(aws_env.queue_url) == (2, 0)
    assert depth(aws_env.dlq_url) == (3, 0)


def test_an_endpoint_without_the_move_task_falls_back_to_the_copy_loop(
    aws_env: Organisation, sqs: SQSClient, read_queue: ReadQueue, depth: Depth
) -> None:
    """GIVEN an endpoint whose StartMessageMoveTask answers InvalidAction (faked on the client:
    the emulator has the task) and two dead letters
    WHEN the DLQ is redriven without filters
    THEN the copy loop moves both, and the result says why the move task was not used."""
    bodies = {dead_letter(sqs, aws_env), dead_letter(sqs, aws_env)}
    move_sqs = aws_env.ops_session().client("sqs", endpoint_url=aws_env.endpoint_url)

    def unsupported(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Error": {"Code": "InvalidAction", "Message": "not here"}}
        return AWSResponse("https://sqs", 400, {}, None), error

    move_sqs.meta.events.register("before-call.sqs.StartMessageMoveTask", unsupported)

    result = redrive(sqs, aws_env.dlq_url, aws_env.queue_url, move_sqs=move_sqs)

    assert (result.mode, len(result.moved)) == ("loop", 2)
    assert result.note is not None
    assert "message-move task is not available" in result.note
    assert {m["Body"] for m in read_queue(aws_env.queue_url)} == bodies
    assert depth(aws_env.dlq_url) == (0, 0)


def test_the_same_queue_for_from_and_to_is_a_usage_error(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN --from and --to naming one queue
    WHEN ``fanout redrive`` runs
    THEN the exit code is 2 with a one-line error, and nothing is read."""
    code = main(["redrive", "--from", aws_env.dlq_url, "--to", aws_env.dlq_url])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fanout: error: --from and --to name the same queue")
    assert len(err.splitlines()) == 1
