"""One SQS batch end to end: parse and authorize every message, dispatch all jobs together,
decide and carry out each message's fate, count each request's ends. A message that selects
its targets by organisation is expanded into parts on the work queue instead
(``handler.expansion``).

Jobs of the whole batch are dispatched together so that plugins can coalesce across messages
and accounts run in parallel. Each message then gets one decision (``handler.lifecycle``)
carried out by ``handler.settle``: acknowledged, or returned to the queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aws_lambda_powertools import Logger

from handler.authorization import Authorizer
from handler.deadletter import DeadLetters
from handler.deadline import Deadline
from handler.dispatch import Dispatcher
from handler.envelope import Envelope, check_params, parse_message
from handler.exceptions import (
    AccountNotAllowedError,
    FanoutError,
    PermanentError,
    RetryableError,
)
from handler.expansion import Expander
from handler.ledger import JobState, Ledger
from handler.ledger import lock_until as ledger_lock_until
from handler.letters import dead_letter_message
from handler.lifecycle import Limits, decide
from handler.outcome import JobOutcome, Result
from handler.settings import Settings
from handler.settle import Settled, Settler
from handler.sqs import BatchResponse, Message, batch_response
from handler.telemetry import BatchMetrics
from handler.tracking import Ended, RequestTracker

__all__ = ["BatchResult", "Worker"]

logger = Logger(child=True)


@dataclass(frozen=True, slots=True)
class BatchResult:
    response: BatchResponse
    metrics: BatchMetrics


@dataclass
class _Parsed:
    message: Message
    envelope: Envelope
    # Refused before anything ran (an account out of bounds): its targets end failed with this
    # reason, recorded like any other - so `fanout status` shows them, with why.
    refused: PermanentError | None = None


class Worker:
    """Everything one execution environment keeps warm: sessions, buckets, ledgers."""

    def __init__(
        self,
        settings: Settings,
        *,
        authorizer: Authorizer,
        dispatcher: Dispatcher,
        settler: Settler,
        ledger: Ledger,
        tracker: RequestTracker,
        dead_letters: DeadLetters,
        expander: Expander,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._authorizer = authorizer
        self._dispatcher = dispatcher
        self._settler = settler
        self._ledger = ledger
        self._tracker = tracker
        self._dead_letters = dead_letters
        self._expander = expander
        self._clock = clock
        self._limits = Limits(
            max_attempts=settings.max_attempts,
            max_waits=settings.max_waits,
            can_defer=bool(settings.work_queue_url),
        )

    def process(
        self, records: Sequence[Mapping[str, Any]], deadline: Deadline, *, own_account: str
    ) -> BatchResult:
        self._authorizer.learn_own_account(own_account)
        metrics = BatchMetrics()
        failed: list[str] = []
        parsed: list[_Parsed] = []
        for record in records:
            message = Message.of(record)
            envelope, error = self._admit(message)
            if envelope is not None and error is None and envelope.selection is not None:
                # A selection runs nothing itself: its targets go back to the queue as parts.
                error = self._expander.expand(message, envelope)
                if error is None:
                    continue
            if envelope is not None and error is None:
                parsed.append(_Parsed(message, envelope))
            elif envelope is not None and isinstance(error, AccountNotAllowedError):
                parsed.append(_Parsed(message, envelope, refused=error))
            elif isinstance(error, PermanentError):
                returned = dead_letter_message(
                    self._ledger, self._dead_letters, message, error, envelope=envelope
                )
                metrics.count("MessagesDeadLettered", "", int(returned is None))
                if returned is not None:
                    failed.append(_returned(message, returned))
            else:
                failed.append(_returned(message, error))
        if parsed:
            failed += self._run(parsed, deadline, metrics)
        return BatchResult(batch_response(failed), metrics)

    def _admit(self, message: Message) -> tuple[Envelope | None, FanoutError | None]:
        """The message's envelope, authorized; or why it cannot run (permanent: dead-letter
        it now; retryable: e.g. OU membership unknown, it comes back)."""
        envelope: Envelope | None = None
        try:
            envelope = parse_message(
                message.body,
                message_id=message.message_id,
                default_region=self._settings.region,
                check=False,
            )
            # Accounts first: a target the worker may not enter ends with that reason (never
            # assumed), whatever its parameters say; then the parameters.
            if envelope.selection is None:  # a selection's targets are authorized one by one
                self._authorizer.authorize(envelope)
            check_params(envelope)
        except PermanentError as exc:
            return envelope, exc
        except RetryableError as exc:  # e.g. OU membership unknown: not a "no"
            return envelope, exc
        if message.redriven:
            jobs = tuple(replace(j, redriven=True) for j in envelope.jobs)
            envelope = replace(envelope, jobs=jobs)
        return envelope, None

    def _run(
        self, parsed: Sequence[_Parsed], deadline: Deadline, metrics: BatchMetrics
    ) -> list[str]:
        """Dispatch the batch's jobs, settle each message; the ids of those that come back."""
        lock_until = ledger_lock_until(self._clock(), deadline)
        views = self._tracker.views([(p.message, p.envelope) for p in parsed])
        # The same job in two messages (same request id, target and params) runs once.
        jobs = {job.key: job for p in parsed if p.refused is None for job in p.envelope.jobs}
        outcomes = self._dispatcher.run(list(jobs.values()), views, deadline, metrics)
        for p in parsed:
            if p.refused is not None:
                outcomes.update(
                    (j.key, JobOutcome(j, Result.FAILED, error=p.refused)) for j in p.envelope.jobs
                )
        failed: list[str] = []
        ended: list[Ended] = []
        for item in parsed:
            message, envelope = item.message, item.envelope
            results = [outcomes[job.key] for job in envelope.jobs]
            verdict = decide(
                results, attempt=message.attempt, waits=message.waits, limits=self._limits
            )
            done = self._settler.settle(message, envelope, verdict, results, lock_until=lock_until)
            ended.append(Ended(message, envelope, done.ended))
            _count(metrics, envelope.task, verdict.counts, done)
            for outcome in results:
                _audit(outcome, message.sender, done)
            if done.error is not None:
                failed.append(_returned(message, done.error, request_id=envelope.request_id))
            if _republished(results, message.message_id):
                self._tracker.note_republished(message, envelope)
        failed += self._tracker.count(ended, metrics)
        return sorted(set(failed))


def _returned(message: Message, error: FanoutError | None, *, request_id: str | None = None) -> str:
    """Log why a message goes back to the queue; its id, for the batch response."""
    if error is not None:
        logger.warning(
            "message returned to the queue",
            extra={
                "message_id": message.message_id,
                "request_id": request_id,
                "error_class": error.error_class,
                "reason": error.reason,
            },
        )
    return message.message_id


def _republished(outcomes: Sequence[JobOutcome], message_id: str) -> bool:
    """Every target had ended without success, first carried by another message: a re-publish
    of a failed request id (or a publisher's duplicate send) - not a redelivery."""
    return bool(outcomes) and all(
        o.result is Result.ENDED
        and o.ended_as in (JobState.FAILED, JobState.NOT_RUN, JobState.CANCELLED)
        and o.origin_message_id not in (None, message_id)
        for o in outcomes
    )


def _count(metrics: BatchMetrics, task: str, counts: Mapping[Result, int], done: Settled) -> None:
    metrics.count("JobsSucceeded", task, counts.get(Result.SUCCEEDED, 0))
    metrics.count("JobsFailed", task, counts.get(Result.FAILED, 0) + counts.get(Result.NOT_RUN, 0))
    metrics.count("JobsDeferred", task, done.deferred)
    metrics.count("JobsDeadLettered", task, done.lettered)


def _audit(outcome: JobOutcome, sender: str, done: Settled) -> None:
    """One structured line per job: who asked, what ran where, and what came of it."""
    job = outcome.job
    ended = done.ended.get(job.key)
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
            "state": ended.value if ended else outcome.result.value,
            "replayed": outcome.replayed,
            "resource_id": outcome.task_result.resource_id if outcome.task_result else None,
            "error_class": outcome.error.error_class if outcome.error else None,
            "reason": outcome.error.reason if outcome.error else None,
        },
    )
