"""One SQS batch end to end: parse every record, dispatch all jobs together, settle each record.

Jobs of the whole batch are dispatched together so that plugins can coalesce across messages
and accounts run in parallel. Each record then gets one verdict: done (acknowledged, with any
permanently failed targets dead-lettered) or retry (reported as a batch-item failure).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from handler.accounts import AccountDirectory
from handler.credentials import SessionCache
from handler.deadletter import ATTRIBUTE_PREFIX, REDRIVEN_ATTRIBUTE, DeadLetters
from handler.deadline import Deadline
from handler.dispatch import Dispatcher
from handler.envelope import Envelope, parse_message
from handler.exceptions import (
    CanaryPendingError,
    DeadlineExceededError,
    FanoutError,
    JobBusyError,
    PermanentError,
    RetryableError,
    TransientError,
)
from handler.guard import authorize
from handler.ledger import DynamoDBLedger, InMemoryLedger, Ledger
from handler.outcome import JobOutcome, JobState
from handler.ratelimit import RateLimiter
from handler.requeue import Requeue, attempt_of, retry_delay
from handler.settings import Settings
from handler.telemetry import BatchMetrics
from tasks.base import Job

__all__ = ["BatchVerdicts", "BatchWorker"]

MAX_BODY_BYTES = 250_000  # SQS accepts 256 KiB with attributes; keep a margin for them
_MISSING = object()
# Retry outcomes of jobs that were never tried: they do not use up an attempt.
_NOT_TRIED = (DeadlineExceededError, CanaryPendingError, JobBusyError)

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
        ledger: Ledger,
    ) -> None:
        self._ledger = ledger
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
            ledger=ledger,
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
                if _redriven(record):
                    envelope = replace(
                        envelope, jobs=tuple(replace(j, redriven=True) for j in envelope.jobs)
                    )
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
        # Failures the ledger already held were dead-lettered by an earlier delivery.
        failed = [o for o in results if o.state is JobState.FAILED and not o.replayed]
        attempt = attempt_of(record)
        waiting = [o for o in retry if isinstance(o.error, _NOT_TRIED)]
        tried = [o for o in retry if not isinstance(o.error, _NOT_TRIED)]
        if tried and attempt >= self._settings.max_attempts:
            # Out of attempts: these targets are dead-lettered like permanent failures.
            last = tried[0].error
            reason = f"gave up after {attempt} attempts: {last.reason if last else 'unknown'}"
            failed += [
                JobOutcome(o.job, JobState.FAILED, error=type(o.error)(reason) if o.error else None)
                for o in tried
            ]
            tried = []
        retry = tried + waiting
        metrics.count("JobsSucceeded", task, sum(o.state is JobState.SUCCEEDED for o in results))
        metrics.count("JobsDeferred", task, len(retry))
        metrics.count("JobsFailed", task, len(failed))
        if retry and not self._defer(record, envelope, tried, waiting, attempt):
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
        tried: Sequence[JobOutcome],
        waiting: Sequence[JobOutcome],
        attempt: int,
    ) -> bool:
        """Re-send the retry targets with a growing delay; False if that is not possible.

        Targets that were tried count an attempt; targets never started (out of time, waiting
        for a canary or for another invocation) keep theirs, so waiting never dead-letters.
        """
        groups = [(list(tried), attempt + 1), (list(waiting), attempt)]
        try:
            sent = True
            for outcomes, next_attempt in groups:
                if not outcomes:
                    continue
                error = outcomes[0].error
                delay = retry_delay(error, attempt)
                for body in _envelope_bodies(envelope, [o.job for o in outcomes]):
                    sent = sent and self._requeue.send(
                        body,
                        attempt=next_attempt,
                        delay=delay,
                        source_message_id=record["messageId"],
                    )
                logger.info(
                    "deferred targets",
                    extra={
                        "request_id": envelope.request_id,
                        "targets": len(outcomes),
                        "attempt": next_attempt,
                        "delay_seconds": delay,
                        "error_class": error.error_class if error else None,
                    },
                )
        except Exception as exc:  # noqa: BLE001 - fall back to SQS redelivery
            logger.warning("could not re-send deferred targets", extra={"reason": str(exc)})
            return False
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
        try:
            if self._ledger.dead_lettered(message_id):
                # A duplicate delivery (the first acknowledgement was lost): already ended.
                logger.info("message already dead-lettered", extra={"message_id": message_id})
                return None
        except Exception as exc:  # noqa: BLE001 - unknown: keep the message and retry
            return TransientError(f"could not check the ledger before dead-lettering: {exc}")
        logger.error(
            "dead-lettering message",
            extra={
                "message_id": message_id,
                "request_id": envelope.request_id if envelope else None,
                "error_class": error.error_class,
                "reason": error.reason,
            },
        )
        # Only the failed targets are dead-lettered, so a redrive never repeats a success; many
        # of them may take several dead letters, each under SQS's size limit.
        if envelope and jobs:
            letters = [
                (body, [f"{t['account']}/{t['region']}" for t in json.loads(body)["targets"]])
                for body in _envelope_bodies(envelope, jobs)
            ]
        else:
            letters = [(record["body"], [])]
        try:
            sent = all(
                self._dead_letters.send(
                    body=body,
                    error=error,
                    source_message_id=message_id,
                    task=envelope.task if envelope else None,
                    request_id=envelope.request_id if envelope else None,
                    targets=targets,
                )
                for body, targets in letters
            )
        except Exception as exc:  # noqa: BLE001 - any failure here means: keep the message
            logger.warning("dead-letter queue unavailable", extra={"reason": str(exc)})
            return TransientError(f"could not dead-letter ({error.reason}): {exc}")
        if not sent:
            # Without DEAD_LETTER_QUEUE_URL the record is reported failed; SQS redrive moves it.
            return error
        try:
            self._ledger.mark_dead_lettered(message_id)
        except Exception as exc:  # noqa: BLE001 - the dead letter exists: still acknowledge
            logger.warning("could not remember the dead letter", extra={"reason": str(exc)})
        return None


def _envelope_bodies(
    envelope: Envelope, jobs: Sequence[Job], max_bytes: int = MAX_BODY_BYTES
) -> list[str]:
    """v1 bodies for some of a message's jobs, each under SQS's size limit.

    Same request id and options, and parameters shared by all the jobs stated once at the top
    (as publishers write them), so the job keys hold and a body is no larger than its source.
    """
    options = envelope.options.as_json()
    if options.get("canary") and not any(job.canary for job in jobs):
        del options["canary"]  # the canary already succeeded
    first = dict(jobs[0].params) if jobs else {}
    shared = {k: v for k, v in first.items() if all(j.params.get(k, _MISSING) == v for j in jobs)}
    head: dict[str, Any] = {"version": 1, "task": envelope.task, "request_id": envelope.request_id}
    if shared:
        head["params"] = shared
    if options:
        head["options"] = options
    targets = [
        {
            "account": j.account,
            "region": j.region,
            "params": {k: v for k, v in j.params.items() if k not in shared},
        }
        for j in jobs
    ]
    budget = max_bytes - len(json.dumps(head, separators=(",", ":")).encode()) - 32
    bodies: list[str] = []
    chunk: list[dict[str, Any]] = []
    size = 0
    for target in targets:
        cost = len(json.dumps(target, separators=(",", ":")).encode()) + 1
        if chunk and size + cost > budget:
            bodies.append(json.dumps({**head, "targets": chunk}, separators=(",", ":")))
            chunk, size = [], 0
        chunk.append(target)
        size += cost
    if chunk:
        bodies.append(json.dumps({**head, "targets": chunk}, separators=(",", ":")))
    return bodies


def _redriven(record: Mapping[str, Any]) -> bool:
    """Sent back from the DLQ by an operator: by `fanout redrive` (which marks it) or by SQS's
    message-move task (which keeps the dead letter's attributes)."""
    attributes = record.get("messageAttributes", {})
    return REDRIVEN_ATTRIBUTE in attributes or ATTRIBUTE_PREFIX + "error_class" in attributes


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
