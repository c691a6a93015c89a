"""One SQS batch end to end: parse every record, dispatch all jobs together, settle each record.

Jobs of the whole batch are dispatched together so that plugins can coalesce across messages
and accounts run in parallel. Each record then gets one verdict: done (acknowledged, with any
permanently failed targets dead-lettered) or retry (reported as a batch-item failure).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from handler.accounts import AccountDirectory
from handler.credentials import SessionCache
from handler.deadletter import DeadLetters
from handler.deadline import Deadline
from handler.dispatch import Dispatcher
from handler.envelope import Envelope, parse_message
from handler.exceptions import FanoutError, PermanentError, RetryableError, TransientError
from handler.guard import authorize
from handler.ledger import DynamoDBLedger, InMemoryLedger, Ledger
from handler.outcome import JobOutcome, JobState
from handler.ratelimit import RateLimiter
from handler.requeue import Requeue, attempt_of, retry_delay
from handler.settings import Settings
from handler.telemetry import BatchMetrics
from tasks.base import Job

__all__ = ["BatchVerdicts", "BatchWorker"]

logger = Logger(child=True)


@dataclass(frozen=True, slots=True)
class BatchVerdicts:
    """Per message id: None when done, else the error that sends it back to the queue."""

    errors: Mapping[str, FanoutError | None]
    metrics: BatchMetrics = field(default_factory=BatchMetrics)

    def settle(self, record: SQSRecord) -> str:
        """Powertools record handler: raising marks the record as a batch-item failure."""
        error = self.errors[record.message_id]
        if error is not None:
            raise error
        return record.message_id


class BatchWorker:
    """Everything one execution environment keeps warm: sessions, buckets, dead letters."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: SessionCache,
        dispatcher: Dispatcher,
        dead_letters: DeadLetters,
        requeue: Requeue,
        directory: AccountDirectory,
    ) -> None:
        self._directory = directory
        self._settings = settings
        self._sessions = sessions
        self._dispatcher = dispatcher
        self._dead_letters = dead_letters
        self._requeue = requeue

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchWorker:
        sessions: SessionCache
        directory = AccountDirectory(settings, lambda: sessions.own_client("organizations"))
        sessions = SessionCache(settings, check_account=directory.check)
        ledger: Ledger = (
            DynamoDBLedger(settings.ledger_table, lambda: sessions.own_client("dynamodb"))
            if settings.ledger_table
            else InMemoryLedger()
        )
        sqs = lambda: sessions.own_client("sqs")  # noqa: E731 - created on first use
        return cls(
            settings,
            sessions=sessions,
            dispatcher=Dispatcher(
                sessions,
                RateLimiter(overrides=settings.rate_limits),
                ledger,
                max_workers=settings.max_workers,
                resource_scoped_sessions=settings.session_policy_scope == "resource",
            ),
            dead_letters=DeadLetters(settings.dead_letter_queue_url, sqs),
            requeue=Requeue(settings.work_queue_url, sqs),
            directory=directory,
        )

    def process(
        self,
        records: Sequence[Mapping[str, Any]],
        deadline: Deadline,
        *,
        own_account: str | None = None,
    ) -> BatchVerdicts:
        if own_account:
            self._directory.own_account = own_account
        errors: dict[str, FanoutError | None] = {}
        metrics = BatchMetrics()
        envelopes: dict[str, tuple[Mapping[str, Any], Envelope]] = {}
        for record in records:
            message_id = record["messageId"]
            try:
                envelope = parse_message(
                    record["body"], message_id=message_id, default_region=self._settings.region
                )
                authorize(envelope, self._settings, self._sessions)
            except PermanentError as exc:
                errors[message_id] = self._dead_letter(record, exc)
                metrics.count("MessagesDeadLettered", "", int(errors[message_id] is None))
                continue
            except RetryableError as exc:  # e.g. the OU membership could not be resolved
                logger.warning("message not authorized yet", extra={"reason": exc.reason})
                errors[message_id] = exc
                continue
            envelopes[message_id] = (record, envelope)
        # The same job in two messages (same request id, target and params) runs once.
        jobs = {job.key: job for _, env in envelopes.values() for job in env.jobs}
        outcomes = self._dispatcher.run(list(jobs.values()), deadline, metrics) if jobs else {}
        for message_id, (record, envelope) in envelopes.items():
            errors[message_id] = self._settle(record, envelope, outcomes, metrics)
        return BatchVerdicts(errors, metrics)

    def _settle(
        self,
        record: Mapping[str, Any],
        envelope: Envelope,
        outcomes: Mapping[str, JobOutcome],
        metrics: BatchMetrics,
    ) -> FanoutError | None:
        results = [outcomes[job.key] for job in envelope.jobs]
        task = envelope.task
        sender = record.get("attributes", {}).get("SenderId", "")
        for outcome in results:
            _audit(outcome, sender)
        retry = [o for o in results if o.state is JobState.RETRY]
        failed = [o for o in results if o.state is JobState.FAILED]
        attempt = attempt_of(record)
        if retry and attempt >= self._settings.max_attempts:
            # Out of attempts: these targets are dead-lettered like permanent failures.
            last = retry[0].error
            reason = f"gave up after {attempt} attempts: {last.reason if last else 'unknown'}"
            failed += [
                JobOutcome(o.job, JobState.FAILED, error=type(o.error)(reason) if o.error else None)
                for o in retry
            ]
            retry = []
        metrics.count("JobsSucceeded", task, sum(o.state is JobState.SUCCEEDED for o in results))
        metrics.count("JobsDeferred", task, len(retry))
        metrics.count("JobsFailed", task, len(failed))
        if retry and not self._defer(record, envelope, retry, attempt):
            # No work queue to re-send to: SQS redelivers the whole message after its
            # visibility timeout. Dead-lettering waits until nothing of it is left to retry, so
            # a target is never dead-lettered twice across redeliveries.
            first = retry[0].error
            return RetryableError(
                f"{len(retry)} of {len(results)} targets to retry: "
                f"{first.reason if first else 'unknown'}"
            )
        if failed:
            error = failed[0].error or PermanentError("unknown failure")
            reason = f"{len(failed)} of {len(results)} targets failed: {error.reason}"
            verdict = self._dead_letter(
                record,
                type(error)(reason),
                envelope=envelope,
                jobs=[o.job for o in failed],
            )
            metrics.count("JobsDeadLettered", task, len(failed) if verdict is None else 0)
            return verdict
        return None

    def _defer(
        self,
        record: Mapping[str, Any],
        envelope: Envelope,
        retry: Sequence[JobOutcome],
        attempt: int,
    ) -> bool:
        """Re-send the retry targets with a growing delay; False if that is not possible."""
        error = retry[0].error
        delay = retry_delay(error, attempt)
        try:
            sent = self._requeue.send(
                _envelope_body(envelope, [o.job for o in retry]),
                attempt=attempt + 1,
                delay=delay,
                source_message_id=record["messageId"],
            )
        except Exception as exc:  # noqa: BLE001 - fall back to SQS redelivery
            logger.warning("could not re-send deferred targets", extra={"reason": str(exc)})
            return False
        if sent:
            logger.info(
                "deferred targets",
                extra={
                    "request_id": envelope.request_id,
                    "targets": len(retry),
                    "attempt": attempt + 1,
                    "delay_seconds": delay,
                    "error_class": error.error_class if error else None,
                },
            )
        return sent

    def _dead_letter(
        self,
        record: Mapping[str, Any],
        error: FanoutError,
        *,
        envelope: Envelope | None = None,
        jobs: Sequence[Job] = (),
    ) -> FanoutError | None:
        message_id = record["messageId"]
        logger.error(
            "dead-lettering message",
            extra={
                "message_id": message_id,
                "request_id": envelope.request_id if envelope else None,
                "error_class": error.error_class,
                "reason": error.reason,
            },
        )
        # Only the failed targets are dead-lettered, so a redrive never repeats a success.
        body = _envelope_body(envelope, jobs) if envelope and jobs else record["body"]
        try:
            sent = self._dead_letters.send(
                body=body,
                error=error,
                source_message_id=message_id,
                task=envelope.task if envelope else None,
                request_id=envelope.request_id if envelope else None,
                targets=[f"{j.account}/{j.region}" for j in jobs],
            )
        except Exception as exc:  # noqa: BLE001 - any failure here means: keep the message
            logger.warning("dead-letter queue unavailable", extra={"reason": str(exc)})
            return TransientError(f"could not dead-letter ({error.reason}): {exc}")
        # Without DEAD_LETTER_QUEUE_URL the record is reported failed; SQS redrive moves it.
        return None if sent else error


def _envelope_body(envelope: Envelope, jobs: Sequence[Job]) -> str:
    """A v1 body for some of a message's jobs: same request id and options, so job keys hold."""
    options = envelope.options.as_json()
    if options.get("canary") and not any(job.canary for job in jobs):
        del options["canary"]  # the canary already succeeded
    body: dict[str, Any] = {
        "version": 1,
        "task": envelope.task,
        "request_id": envelope.request_id,
        "targets": [
            {"account": j.account, "region": j.region, "params": dict(j.params)} for j in jobs
        ],
    }
    if options:
        body["options"] = options
    return json.dumps(body, separators=(",", ":"))


def _audit(outcome: JobOutcome, sender: str) -> None:
    """One structured line per job: who asked, what ran where, and what came of it."""
    job = outcome.job
    logger.info(
        "job finished",
        extra={
            "audit": True,
            "request_id": job.request_id,
            "message_id": job.message_id,
            "requested_by": sender,
            "task": job.task,
            "account": job.account,
            "region": job.region,
            "state": outcome.state.value,
            "resource_id": outcome.result.resource_id if outcome.result else None,
            "error_class": outcome.error.error_class if outcome.error else None,
            "reason": outcome.error.reason if outcome.error else None,
        },
    )
