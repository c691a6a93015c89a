"""``fanout invoke EVENT``: one SQS event file through the real handler, as ``sam local invoke``
passes it, without Docker, against the emulator.

The handler runs in the poller's killable child process (``fanout.invoker``), with the
function's environment: this process's (a running ``fanout emulator`` whose env file was
sourced, i.e. ``AWS_ENDPOINT_URL`` is set) or an embedded emulator started for this one event
and seeded with the ids the sample events name. Afterwards the ledger says what became of each
record's request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fanout import local_worker
from fanout.context import LocalLambdaContext
from fanout.emulator import OPS_ACCOUNT, seed_organisation, start_emulator
from fanout.invoker import Outcome, ProcessInvoker
from fanout.moto_config import lambda_runs_in_docker, set_lambda_echo
from fanout.status import StatusReport, ledger_for, read_status

__all__ = ["EventError", "Invocation", "RecordResult", "invoke_event", "load_sqs_event"]

FUNCTION_NAME: Final = "fanout-worker"
LAMBDA_TASK: Final = "lambda.invoke"


class EventError(Exception):
    """The file is not an SQS event the function could receive; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_sqs_event(path: Path) -> dict[str, Any]:
    """The event in ``path``, if it is what the SQS event source delivers (``Records``)."""
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EventError(f"cannot read {path}: {exc}") from None
    if isinstance(event, dict) and "detail-type" in event:
        raise EventError(
            f"{path} is an EventBridge event ({event.get('detail-type')}), not what the function "
            "receives: a rule or schedule turns it into a task message on the queue; "
            "docs/triggers.md shows how to test that input"
        )
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        raise EventError(f"{path} has no Records: not an SQS event")
    sources = {r.get("eventSource") for r in records if isinstance(r, dict)}
    if sources != {"aws:sqs"} or len(records) != sum(isinstance(r, dict) for r in records):
        raise EventError(f"{path}: every record must come from SQS (eventSource aws:sqs)")
    return dict(event)


@dataclass(frozen=True)
class RecordResult:
    """One record of the event: its request in the ledger, or why it has none."""

    message_id: str
    failed: bool  # reported as a batch-item failure (back to the queue)
    request_id: str | None = None
    task: str | None = None
    report: StatusReport | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        if self.failed:
            return False
        if self.report is None:  # not a task message: the worker dead-lettered it
            return True
        return self.report.succeeded

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "request_id": self.request_id,
            "task": self.task,
            "batch_item_failure": self.failed,
            "ok": self.ok,
            "note": self.note,
            "status": self.report.as_dict() if self.report else None,
        }


@dataclass
class Invocation:
    """What the handler answered and what the ledger holds afterwards."""

    endpoint_url: str
    embedded: bool
    outcome: str
    error: str | None = None
    response: Any = None
    records: list[RecordResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK.value and all(r.ok for r in self.records)

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "embedded_emulator": self.embedded,
            "outcome": self.outcome,
            "error": self.error,
            "response": self.response,
            "ok": self.ok,
            "records": [r.as_dict() for r in self.records],
            "notes": self.notes,
        }


def _body(record: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        body = json.loads(str(record.get("body", "")))
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _tasks(event: Mapping[str, Any]) -> set[str]:
    found = set()
    for record in event["Records"]:
        body = _body(record)
        if body is not None:
            found.add(str(body.get("task", "cloudfront.invalidate")))
    return found


def _run(event: dict[str, Any], *, timeout_s: float, region: str) -> tuple[str, Any, str | None]:
    local_worker.quiet_environment()
    context = LocalLambdaContext.create(
        function_name=FUNCTION_NAME,
        region=region,
        account=OPS_ACCOUNT,
        timeout_s=timeout_s,
        memory_mb=512,
    )
    with ProcessInvoker() as invoker:
        invocation = invoker.invoke(event, context)
    return invocation.outcome.value, invocation.response, invocation.error


def _results(event: Mapping[str, Any], response: Any, region: str) -> list[RecordResult]:
    failures = response.get("batchItemFailures", []) if isinstance(response, dict) else []
    failed = {f.get("itemIdentifier") for f in failures if isinstance(f, dict)}
    table = os.environ.get("LEDGER_TABLE")
    ledger = ledger_for(table, region=region) if table else None
    results = []
    for record in event["Records"]:
        message_id = str(record.get("messageId", ""))
        body = _body(record)
        if body is None:
            results.append(
                RecordResult(
                    message_id,
                    message_id in failed,
                    note="not a task message: dead-lettered by the worker, with its reason",
                )
            )
            continue
        request_id = str(body.get("request_id") or message_id)
        task = str(body.get("task", "cloudfront.invalidate"))
        report = read_status(ledger, request_id) if ledger else None
        results.append(RecordResult(message_id, message_id in failed, request_id, task, report))
    return results


def invoke_event(
    event: dict[str, Any], *, timeout_s: float = 60.0, embedded: bool | None = None
) -> Invocation:
    """Run ``event`` through the handler; ``embedded=None``: start an emulator unless
    ``AWS_ENDPOINT_URL`` names one."""
    running = os.environ.get("AWS_ENDPOINT_URL", "")
    if embedded is None:
        embedded = not running
    if not embedded:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        result = _invoke_here(event, running, timeout_s=timeout_s, region=region)
        if LAMBDA_TASK in _tasks(event) and lambda_runs_in_docker(running):
            result.notes.append(
                "this emulator runs Lambda code only in Docker, so lambda.invoke fails here: "
                "start it with `fanout emulator --lambda-echo`, or run `fanout invoke` without "
                "AWS_ENDPOINT_URL (an embedded emulator)"
            )
        return result
    with start_emulator() as emulator:
        set_lambda_echo(emulator.endpoint_url)  # before seeding: moto keeps the modes apart
        org = seed_organisation(emulator.endpoint_url, stable_ids=True)
        with local_worker.environment(
            org.handler_environment(log_level=local_worker.LOCAL_LOG_LEVEL)
        ):
            result = _invoke_here(event, org.endpoint_url, timeout_s=timeout_s, region=org.region)
        result.embedded = True
    result.notes.insert(
        0,
        f"no AWS_ENDPOINT_URL: ran against an embedded emulator ({org.endpoint_url}), seeded "
        "with the ids events/ names, stopped afterwards",
    )
    return result


def _invoke_here(
    event: dict[str, Any], endpoint_url: str, *, timeout_s: float, region: str
) -> Invocation:
    outcome, response, error = _run(event, timeout_s=timeout_s, region=region)
    result = Invocation(endpoint_url, embedded=False, outcome=outcome, error=error)
    result.response = response
    if outcome == Outcome.OK.value:
        result.records = _results(event, response, region)
    if LAMBDA_TASK in _tasks(event) and lambda_runs_in_docker(endpoint_url) is False:
        result.notes.append(
            "lambda.invoke: moto without Docker answers Invoke with the payload and runs no "
            "code: this shows the worker's path (allow-list, AssumeRole into each account, "
            "session policy, ledger), not that the function ran"
        )
    return result


def record_rows(records: Sequence[RecordResult]) -> list[list[str]]:
    """Table rows: message id, request id, task, outcome, targets."""
    rows = []
    for record in records:
        if record.report is None:
            outcome = "back to the queue" if record.failed else "dead-lettered"
            targets = "-"
        else:
            report = record.report
            outcome = "succeeded" if report.succeeded else report.state
            if record.failed:
                outcome = "back to the queue"
            targets = ", ".join(f"{t.target} {t.outcome.value}" for t in report.targets) or "-"
        rows.append(
            [record.message_id, record.request_id or "-", record.task or "-", outcome, targets]
        )
    return rows
