"""``fanout poll`` shows a live line on a terminal's stderr, and nothing on a pipe.

Each test runs the real command in a fresh process with stdout on a pipe (the results) and
stderr on a pseudo-terminal or a pipe, against the emulator's queues and the real worker.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from fanout.emulator import Organisation
from fanout.poll_progress import describe
from fanout.poller import PollStats

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

POLL = [sys.executable, "-m", "fanout", "poll", "--until-empty", "--time-limit", "60", "-o", "json"]


def _publish_two(org: Organisation, sqs: SQSClient) -> None:
    target = org.targets[0]
    for n in range(2):
        body = {
            "version": 1,
            "task": "cloudfront.invalidate",
            "request_id": f"progress-{uuid.uuid4().hex[:12]}",
            "targets": [
                {
                    "account": target.account,
                    "params": {"distribution_id": target.distribution_ids[0]},
                }
            ],
            "params": {"paths": [f"/progress/{n}.html"]},
        }
        sqs.send_message(QueueUrl=org.queue_url, MessageBody=json.dumps(body))


def _environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return {**environment, "TERM": "xterm-256color", "COLUMNS": "160"}


def _run_with_terminal_stderr() -> tuple[int, str, str]:
    """The command with stderr on a pseudo-terminal; (exit code, stdout, terminal output)."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        POLL, stdout=subprocess.PIPE, stderr=terminal, env=_environment(), text=True
    ) as process:
        os.close(terminal)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.stdout is not None
        out = process.stdout.read()
        code = process.wait(timeout=90)
    os.close(controller)
    return code, out, b"".join(chunks).decode(errors="replace")


@pytest.mark.timeout(120)
def test_on_a_terminal_a_live_line_shows_records_and_what_is_left(
    aws_env: Organisation, sqs: SQSClient
) -> None:
    """GIVEN two messages in the work queue
    WHEN ``fanout poll --until-empty -o json`` runs with stderr on a terminal
    THEN the terminal shows the live line (records, deleted, what is left in the queue), and
    stdout, a pipe, still holds exactly one JSON document."""
    _publish_two(aws_env, sqs)

    code, out, terminal = _run_with_terminal_stderr()

    assert code == 0, terminal
    assert json.loads(out)["records"] == 2
    assert "records:" in terminal
    assert "left in the queue" in terminal


@pytest.mark.timeout(120)
def test_on_a_pipe_nothing_of_the_live_line_is_written(
    aws_env: Organisation, sqs: SQSClient
) -> None:
    """GIVEN two messages WHEN ``fanout poll`` runs with stderr on a pipe
    THEN stderr holds no progress line (only what the worker logs, here nothing)."""
    _publish_two(aws_env, sqs)

    result = subprocess.run(
        POLL, capture_output=True, text=True, env=_environment(), timeout=90, check=False
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] == 2
    assert "left in the queue" not in result.stderr
    assert "records:" not in result.stderr


def test_the_line_counts_batches_records_and_failures() -> None:
    """GIVEN poll totals WHEN described THEN the line names each count and the queue's rest."""
    stats = PollStats(batches=3, records=27, deleted=25, failures_reported=2, handler_errors=1)

    assert describe(stats, 4) == (
        "3 batches, 27 records: 25 deleted, 2 failed, 1 batches failed whole; 4 left in the queue"
    )
    assert describe(PollStats(batches=1, records=1, deleted=1), None) == (
        "1 batch, 1 records: 1 deleted, 0 failed"
    )
