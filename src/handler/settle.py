"""Carry out a message's verdict (``handler.lifecycle``): letters, re-sends, the ledger's marks.

The order is what keeps every promise:

1. **Letters first, then the mark** (``handler.letters``).
2. **Re-sends** carry the request block, the options (canary by name, max_errors) and the
   counters, so a deferred target is the same job under the same request-wide controls.
3. **Acknowledge only when all of it happened.** Any failure returns an error: the message
   comes back, and the ledger makes the next delivery continue where this one stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger

from handler.deadletter import DeadLetters
from handler.envelope import Envelope, bodies_for
from handler.exceptions import (
    ConfigurationError,
    FanoutError,
    RetryableError,
    TransientError,
)
from handler.ledger import JobState, Ledger
from handler.letters import Ended, Letters
from handler.lifecycle import Deferral, Verdict, busy_deferral
from handler.outcome import JobOutcome, Result
from handler.requeue import Requeue
from handler.sqs import Message

__all__ = ["Settled", "Settler"]

logger = Logger(child=True)


@dataclass
class Settled:
    """What settling a message did: its error (None: acknowledge it) and the final states its
    jobs reached in this delivery (for the request's counts)."""

    error: FanoutError | None = None
    ended: dict[str, JobState] = field(default_factory=dict)
    lettered: int = 0
    deferred: int = 0


class Settler:
    def __init__(
        self,
        ledger: Ledger,
        dead_letters: DeadLetters,
        requeue: Requeue,
        *,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self._letters = Letters(ledger, dead_letters)
        self._requeue = requeue
        self._rand = rand

    def settle(
        self,
        message: Message,
        envelope: Envelope,
        verdict: Verdict,
        outcomes: Sequence[JobOutcome],
        *,
        lock_until: float,
    ) -> Settled:
        ended = Ended(states=_ended_by_outcome(outcomes))
        settled = Settled(ended=ended.states)
        busy: list[JobOutcome] = []
        try:
            cancelled = [o for o in outcomes if o.result is Result.CANCELLED]
            busy += self._letters.cancel(cancelled, lock_until, ended)
            for letter in verdict.letters:
                busy += self._letters.letter(message, envelope, letter, lock_until, ended)
            deferrals = list(verdict.deferrals)
            if busy:
                deferrals.append(busy_deferral(busy, attempt=message.attempt, waits=message.waits))
            if deferrals and not self._requeue.queue_url:
                settled.error = verdict.redeliver or RetryableError(
                    "targets to retry, no WORK_QUEUE_URL"
                )
                return settled
            for deferral in deferrals:
                self._defer(message, envelope, deferral, settled)
        except ConfigurationError:
            raise
        except FanoutError as exc:
            settled.error = exc
            return settled
        finally:
            settled.lettered = ended.lettered
        settled.error = verdict.redeliver
        return settled

    def _defer(
        self, message: Message, envelope: Envelope, deferral: Deferral, settled: Settled
    ) -> None:
        jobs = [o.job for o in deferral.outcomes]
        for body, _ in bodies_for(envelope, jobs):
            try:
                self._requeue.send(
                    body,
                    attempt=deferral.attempt,
                    waits=deferral.waits,
                    delay=deferral.delay,
                    source_message_id=message.message_id,
                )
            except Exception as exc:
                raise TransientError(f"could not re-send deferred targets: {exc}") from exc
        settled.deferred += len(jobs)
        logger.info(
            "deferred targets",
            extra={
                "request_id": envelope.request_id,
                "targets": len(jobs),
                "attempt": deferral.attempt,
                "waits": deferral.waits,
                "delay_seconds": deferral.delay,
                "error_class": deferral.error.error_class,
            },
        )


def _ended_by_outcome(outcomes: Sequence[JobOutcome]) -> dict[str, JobState]:
    """The final states the outcomes themselves show (a success, a dry run, a replayed end)."""
    ended: dict[str, JobState] = {}
    for outcome in outcomes:
        if outcome.result is Result.SUCCEEDED:
            ended[outcome.job.key] = JobState.SUCCEEDED
        elif outcome.result is Result.DRY_RUN:
            ended[outcome.job.key] = JobState.DRY_RUN
        elif outcome.result is Result.ENDED and outcome.ended_as is not None:
            ended[outcome.job.key] = outcome.ended_as
    return ended
