"""Dead letters: a job's letter is written under the ledger's hold, and only then is the job
marked as ended.

1. **Hold, send, mark.** A job is FAILING in the ledger (held by this delivery) before its letter
   is sent, and becomes FAILED/NOT_RUN only after the letter exists. If the send fails, or the
   process dies in between, the message is not acknowledged: its next delivery finds the job
   FAILING (its lock expired) and writes the letter again - under the same letter id, so a
   consumer of the dead-letter queue can drop the copy.
2. **Cancelled jobs** are held and marked CANCELLED without a letter (nothing failed).
3. **A message with no jobs** (bad input, not allowed) is lettered whole, with its reason; the
   ledger remembers its id so a duplicate delivery is not lettered twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger

from handler.deadletter import DeadLetters
from handler.envelope import Envelope, bodies_for
from handler.exceptions import ConfigurationError, FanoutError, RetryableError, TransientError
from handler.ledger import Claim, Decision, JobState, Ledger
from handler.lifecycle import Letter
from handler.outcome import JobOutcome
from handler.sqs import Message
from tasks.base import Job

__all__ = ["Letters", "NoDeadLetterQueueError", "dead_letter_message", "letter_id"]

logger = Logger(child=True)


@dataclass
class Ended:
    """The final states jobs reached in this delivery, and how many were lettered."""

    states: dict[str, JobState] = field(default_factory=dict)
    lettered: int = 0


def letter_id(jobs: Sequence[Job], ending: JobState) -> str:
    keys = sorted(job.key for job in jobs)
    return hashlib.sha256(f"{ending}:{','.join(keys)}".encode()).hexdigest()[:32]


class Letters:
    """Writes the letters of a message's failed jobs, and ends its cancelled ones."""

    def __init__(self, ledger: Ledger, dead_letters: DeadLetters) -> None:
        self._ledger = ledger
        self._dead_letters = dead_letters

    def cancel(
        self, outcomes: Sequence[JobOutcome], lock_until: float, ended: Ended
    ) -> list[JobOutcome]:
        """Cancelled jobs end CANCELLED (held, then ended without a letter); the busy ones
        (running, or their holder died mid-call) are returned: they must be recovered."""
        if not outcomes:
            return []
        reason = outcomes[0].error.reason if outcomes[0].error else "cancelled"
        claims = self._ledger.hold(
            [o.job for o in outcomes],
            ending=JobState.CANCELLED,
            error_class="Cancelled",
            error=reason,
            lock_until=lock_until,
        )
        held = [c for c in claims if c.decision is Decision.HELD]
        self._ledger.lettered(held)
        for claim in held:
            ended.states[claim.job.key] = JobState.CANCELLED
        for claim in claims:
            if claim.decision is Decision.ENDED and claim.record is not None:
                ended.states[claim.job.key] = claim.record.state
        return [o for o, c in zip(outcomes, claims, strict=True) if c.decision is Decision.BUSY]

    def letter(
        self,
        message: Message,
        envelope: Envelope,
        letter: Letter,
        lock_until: float,
        ended: Ended,
    ) -> list[JobOutcome]:
        """Dead-letter the jobs of ``letter`` this delivery can hold; return the busy ones."""
        claims, busy = self._hold(letter, lock_until, ended)
        if not claims:
            return busy
        if not self._dead_letters.queue_url:
            # SQS's redrive policy moves the whole message after maxReceiveCount instead.
            raise NoDeadLetterQueueError(letter.error)
        jobs = [o.job for o in letter.outcomes if o.job.key in claims]
        logger.error(
            "dead-lettering targets",
            extra={
                "message_id": message.message_id,
                "request_id": envelope.request_id,
                "targets": len(jobs),
                "error_class": letter.error.error_class,
                "reason": letter.error.reason,
            },
        )
        for body, part in bodies_for(envelope, jobs):
            self._send(message, envelope, letter, body, part)
            try:
                self._ledger.lettered([claims[j.key] for j in part])
            except Exception as exc:
                raise TransientError(f"dead letter sent but not recorded: {exc}") from exc
            for job in part:
                ended.states[job.key] = letter.ending
            ended.lettered += len(part)
        return busy

    def _send(
        self, message: Message, envelope: Envelope, letter: Letter, body: str, part: list[Job]
    ) -> None:
        try:
            self._dead_letters.send(
                body=body,
                error=letter.error,
                source_message_id=message.message_id,
                letter_id=letter_id(part, letter.ending),
                task=envelope.task,
                request_id=envelope.request_id,
                targets=[f"{j.account}/{j.region}" for j in part],
            )
        except Exception as exc:
            raise TransientError(f"could not dead-letter ({letter.error.reason}): {exc}") from exc

    def _hold(
        self, letter: Letter, lock_until: float, ended: Ended
    ) -> tuple[dict[str, Claim], list[JobOutcome]]:
        """The claims this delivery writes the letter under (those it holds already, and those
        it can take now, each with its own reason), and the jobs busy elsewhere."""
        claims = {o.job.key: o.letter_claim for o in letter.outcomes if o.letter_claim}
        by_reason: dict[tuple[str, str], list[JobOutcome]] = {}
        for outcome in letter.outcomes:
            if outcome.letter_claim is None:
                error = outcome.error or letter.error
                by_reason.setdefault((error.error_class, error.reason), []).append(outcome)
        busy: list[JobOutcome] = []
        for (error_class, reason), group in by_reason.items():
            answers = self._ledger.hold(
                [o.job for o in group],
                ending=letter.ending,
                error_class=error_class,
                error=reason,
                lock_until=lock_until,
            )
            for outcome, claim in zip(group, answers, strict=True):
                if claim.decision is Decision.HELD:
                    claims[outcome.job.key] = claim
                elif claim.decision is Decision.BUSY:
                    busy.append(outcome)
                elif claim.record is not None:  # it ended meanwhile (elsewhere)
                    ended.states[outcome.job.key] = claim.record.state
        return claims, busy


class NoDeadLetterQueueError(RetryableError):
    """No DEAD_LETTER_QUEUE_URL: the record is reported failed; SQS's redrive moves it."""

    def __init__(self, error: FanoutError) -> None:
        super().__init__(error.reason)
        self.original = error

    @property
    def error_class(self) -> str:
        return self.original.error_class


def _lettered_before(ledger: Ledger, message: Message) -> bool:
    """Whether an earlier delivery lettered this message; unknown (ledger down) counts as no:
    it is lettered again, under the same letter id."""
    try:
        if ledger.dead_lettered(message.message_id):
            logger.info("message already dead-lettered", extra={"message_id": message.message_id})
            return True
    except ConfigurationError:
        raise
    except Exception as exc:  # noqa: BLE001 - unknown: letter it anyway, with the same letter id
        logger.warning("cannot check the ledger before dead-lettering", extra={"reason": str(exc)})
    return False


def dead_letter_message(
    ledger: Ledger,
    dead_letters: DeadLetters,
    message: Message,
    error: FanoutError,
    *,
    envelope: Envelope | None = None,
) -> FanoutError | None:
    """Dead-letter a message that yields no jobs (bad input, not allowed) with its reason;
    None when done. Its reason is kept even when the ledger is down: the "already
    dead-lettered?" check only avoids a duplicate letter (of the same letter id)."""
    if not dead_letters.queue_url:
        return error  # reported failed: SQS's redrive policy moves it
    if _lettered_before(ledger, message):
        return None
    logger.error(
        "dead-lettering message",
        extra={
            "message_id": message.message_id,
            "request_id": envelope.request_id if envelope else None,
            "error_class": error.error_class,
            "reason": error.reason,
        },
    )
    try:
        dead_letters.send(
            body=message.body,
            error=error,
            source_message_id=message.message_id,
            letter_id=f"message-{message.message_id}",
            task=envelope.task if envelope else None,
            request_id=envelope.request_id if envelope else None,
        )
    except ConfigurationError:
        raise
    except Exception as exc:  # noqa: BLE001 - keep the message: it is lettered next time
        return TransientError(f"could not dead-letter ({error.reason}): {exc}")
    try:
        ledger.mark_dead_lettered(message.message_id)
    except Exception as exc:  # noqa: BLE001 - the letter exists: acknowledge anyway
        logger.warning("could not remember the dead letter", extra={"reason": str(exc)})
    return None
