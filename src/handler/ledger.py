"""The job ledger: one record per job, the source of truth for "has this job ended, and how?".

States, and the only transitions the ledger allows (README, "life of a job")::

    (none) | RETRY ───claim───▶ IN_PROGRESS ──finish──▶ SUCCEEDED | RETRY | UNCERTAIN | FAILING
    UNCERTAIN | IN_PROGRESS (lock expired) ───claim (recovered)───▶ IN_PROGRESS
    (none) | RETRY | UNCERTAIN ───hold for a letter───▶ FAILING
    FAILING ──its dead letter was sent──▶ FAILED | NOT_RUN
    FAILED | NOT_RUN ───claim, only from a message redriven from the DLQ───▶ IN_PROGRESS

Invariants the worker's promises rest on:

1. **One holder.** A claim and a finish are conditional writes (atomic per item in DynamoDB):
   a job is claimed by one invocation at a time, and only the holder of the current claim token
   can record its end.
2. **A lock outlives its holder.** ``lock_expires`` is the holder's hard stop (Lambda ends an
   invocation at its timeout) plus a margin; a claim after it is a *recovery*: the previous
   holder is dead and its call may or may not have reached AWS. Recovery repeats an idempotent
   call identically (a coalesced call's exact parameters are recorded with the claim) or looks
   for the effect since the job's first claim (``created_at``); a call that can do neither is
   not repeated.
3. **No lost dead letter.** A job ends FAILED or NOT_RUN only after its dead letter was sent:
   until then it is FAILING (under the lock of whoever writes the letter), and a delivery that
   finds it FAILING with an expired lock writes the letter again.
4. **Failed is final**: only a message redriven from the dead-letter queue may claim it again.

``InMemoryLedger`` (one execution environment, when LEDGER_TABLE is unset) and
``DynamoDBLedger`` implement the same rules (``claim_decision`` is shared) and are tested alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from handler.deadline import Deadline
from tasks.base import Job, TaskResult

__all__ = [
    "FINAL_STATES",
    "LOCK_MARGIN_SECONDS",
    "RECORD_TTL_SECONDS",
    "CallRecord",
    "Claim",
    "Decision",
    "Ending",
    "JobRecord",
    "JobState",
    "Ledger",
    "claim_decision",
    "hold_decision",
    "lock_until",
]

RECORD_TTL_SECONDS: Final = 14 * 24 * 3600  # as long as the DLQ keeps a message
# A lock outlives its holder's hard stop by this much: a request sent just before the stop
# has been answered (or dropped) by the time anyone may recover the job.
LOCK_MARGIN_SECONDS: Final = 10.0
MAX_DETAIL_CHARS: Final = 2048


def lock_until(now: float, deadline: Deadline) -> float:
    """When the claims an invocation makes now expire: its hard stop plus the margin."""
    return now + deadline.remaining_ms() / 1000.0 + LOCK_MARGIN_SECONDS


class JobState(StrEnum):
    IN_PROGRESS = "in_progress"  # claimed, under a lock
    RETRY = "retry"  # known not to have taken effect; may be claimed again
    UNCERTAIN = "uncertain"  # may have taken effect (5xx, timeout): the next claim recovers
    FAILING = "failing"  # ended without success; its dead letter is being written (locked)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a failure of its own; dead-lettered
    NOT_RUN = "not_run"  # held back by a request-wide control; dead-lettered
    CANCELLED = "cancelled"  # its request was cancelled before it ran
    DRY_RUN = "dry_run"  # a dry run's verdict (would run, or why not)


FINAL_STATES: Final = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.NOT_RUN, JobState.CANCELLED, JobState.DRY_RUN}
)


class Decision(StrEnum):
    """What a claim finds, and so what may happen to the job now."""

    FRESH = "fresh"  # granted: nothing of it can have run
    RECOVER = "recover"  # granted: an earlier attempt may have taken effect
    REDRIVE = "redrive"  # granted: it had failed, and an operator sent it back
    ENDED = "ended"  # refused: it has ended (replay its end, run nothing)
    BUSY = "busy"  # refused: another invocation holds its live lock
    LETTER = "letter"  # refused: it is FAILING and its letter writer died; write the letter
    HELD = "held"  # granted by `hold`: this claim writes the job's dead letter


@dataclass(frozen=True, slots=True)
class JobRecord:
    request_id: str
    job_key: str
    task: str
    account: str
    region: str
    state: JobState
    attempts: int = 0
    result_id: str | None = None
    error_class: str | None = None
    last_error: str | None = None
    created_at: float = 0.0  # first claim: any effect of the job happened after it
    updated_at: float = 0.0
    lock_expires: float | None = None
    claim_token: str | None = None
    # The call this job's current attempt belongs to (its idempotency key), when it is one
    # that recovery must repeat identically.
    call_ref: str | None = None
    ending: JobState | None = None  # FAILING: the final state once the letter is sent
    # Dead-lettered while an attempt's outcome was unknown: a redrive recovers, not reruns.
    may_have_run: bool = False
    message_id: str | None = None  # the message that first claimed it
    # The result's small detail (e.g. the invalidation's distribution): `fanout status --refresh`.
    detail: Mapping[str, Any] = field(default_factory=dict)

    def locked(self, now: float) -> bool:
        return self.lock_expires is not None and self.lock_expires >= now


def claim_decision(record: JobRecord | None, now: float, *, redriven: bool) -> Decision:
    """The claim rule both ledgers apply (the DynamoDB ledger as conditions, too)."""
    if record is None or record.state is JobState.RETRY:
        return Decision.FRESH
    state = record.state
    if state in (JobState.IN_PROGRESS, JobState.FAILING) and record.locked(now):
        return Decision.BUSY
    if state is JobState.FAILING:
        return Decision.LETTER
    if state in (JobState.IN_PROGRESS, JobState.UNCERTAIN):
        return Decision.RECOVER
    if state in (JobState.FAILED, JobState.NOT_RUN) and redriven:
        return Decision.RECOVER if record.may_have_run else Decision.REDRIVE
    return Decision.ENDED


def hold_decision(record: JobRecord | None, now: float) -> Decision:
    """May a job be taken to FAILING for a letter? HELD, ENDED or BUSY."""
    if record is None or record.state in (JobState.RETRY, JobState.UNCERTAIN):
        return Decision.HELD
    if record.state is JobState.FAILING and not record.locked(now):
        return Decision.HELD
    if record.state in (JobState.IN_PROGRESS, JobState.FAILING):
        # Running, or its holder died mid-call: it is recovered by running, never lettered
        # blind (that could letter a job that took effect).
        return Decision.BUSY
    return Decision.ENDED


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A coalesced call, recorded with its claim so that recovery can repeat it identically."""

    ref: str  # the call's idempotency key
    task: str
    account: str
    region: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to "may I run this job now?" (or "may I write its letter?")."""

    job: Job
    decision: Decision
    # Granted: the record as this claim wrote it. Refused: the record as found.
    record: JobRecord | None
    # Granted: what the record was before this claim (recovery reads created_at, call_ref).
    previous: JobRecord | None = None

    @property
    def granted(self) -> bool:
        return self.decision in (Decision.FRESH, Decision.RECOVER, Decision.REDRIVE, Decision.HELD)

    @property
    def token(self) -> str:
        return self.record.claim_token or "" if self.record else ""


@dataclass(frozen=True, slots=True)
class Ending:
    """How a claimed job's attempt ended, to be recorded by its holder."""

    claim: Claim
    state: JobState
    result: TaskResult | None = None
    error_class: str | None = None
    error: str | None = None
    # FAILING keeps the lock (the letter is written under it) until this time.
    lock_until: float | None = None
    ending: JobState | None = None  # FAILING: FAILED or NOT_RUN


class Ledger(Protocol):
    def claim(
        self,
        jobs: Sequence[Job],
        *,
        lock_until: float,
        calls: Mapping[str, CallRecord] | None = None,
    ) -> list[Claim]:
        """Claim each job (one answer per job, in order). ``calls`` maps job keys to the
        coalesced call each granted job's attempt belongs to; it is recorded with the claim."""
        ...

    def release(self, claims: Sequence[Claim]) -> None:
        """Undo granted claims whose call never started (a lane claimed ahead and then
        stopped): each job is as it was before its claim - no record, or its state (an
        expired IN_PROGRESS as UNCERTAIN), attempts, recorded call and may_have_run. A claim
        that is no longer ours is left alone."""
        ...

    def record_calls(self, claims: Sequence[Claim], calls: Mapping[str, CallRecord]) -> None:
        """Re-point held claims at the calls they were re-planned into."""
        ...

    def recorded_call(self, ref: str) -> CallRecord | None: ...

    def finish(self, endings: Sequence[Ending]) -> list[bool]:
        """Record each ending; False where the claim was no longer ours (its record wins)."""
        ...

    def hold(
        self,
        jobs: Sequence[Job],
        *,
        ending: JobState,
        error_class: str,
        error: str,
        lock_until: float,
    ) -> list[Claim]:
        """Take jobs that are not running (new, RETRY, UNCERTAIN, or FAILING without a live
        lock) to FAILING under a new lock, to dead-letter them. One answer per job: HELD, or
        ENDED (nothing to do), or BUSY (running, or its holder died: it must be recovered)."""
        ...

    def lettered(self, claims: Sequence[Claim]) -> None:
        """Their dead letter was sent: FAILING (held by these claims) -> its final state."""
        ...

    def jobs(self, request_id: str) -> list[JobRecord]: ...

    def dead_lettered(self, message_id: str) -> bool: ...

    def mark_dead_lettered(self, message_id: str) -> None: ...


def detail_json(detail: Mapping[str, Any] | None) -> str | None:
    if not detail:
        return None
    text = json.dumps(detail, sort_keys=True, default=str)
    return text if len(text) <= MAX_DETAIL_CHARS else None  # never a truncated document


def sorted_records(records: Sequence[JobRecord]) -> list[JobRecord]:
    return sorted(records, key=lambda r: (r.account, r.region, r.job_key))
