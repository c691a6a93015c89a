"""The ledger of one execution environment, used when LEDGER_TABLE is unset (and in tests).

Same rules as the DynamoDB ledger (``handler.ledger``), made atomic by one lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from handler.ledger import (
    CallRecord,
    Claim,
    Decision,
    Ending,
    JobRecord,
    JobState,
    claim_decision,
    hold_decision,
    sorted_records,
)
from tasks.base import Job

__all__ = ["InMemoryLedger"]


def claimed_record(
    job: Job, previous: JobRecord | None, *, now: float, lock_until: float, token: str
) -> JobRecord:
    """The record of a job just claimed: in progress under ``token`` until ``lock_until``."""
    return JobRecord(
        request_id=job.request_id,
        job_key=job.key,
        task=job.task,
        account=job.account,
        region=job.region,
        state=JobState.IN_PROGRESS,
        attempts=(previous.attempts if previous else 0) + 1,
        last_error=previous.last_error if previous else None,
        error_class=previous.error_class if previous else None,
        created_at=previous.created_at if previous else now,
        message_id=previous.message_id if previous and previous.message_id else job.message_id,
        updated_at=now,
        lock_expires=lock_until,
        claim_token=token,
    )


class InMemoryLedger:
    """The ``Ledger`` protocol in memory (one process), for tests, the benchmarks and a
    ledger-less deployment. Every rule of ``ledger_dynamodb``'s conditional writes is restated
    here under one lock, in the same order, so that the two can be read side by side (the
    shared unit tests run against both); that is why it is as long as it is."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: dict[tuple[str, str], JobRecord] = {}
        self._calls: dict[str, CallRecord] = {}
        self._dead_letters: set[str] = set()
        self._lock = threading.Lock()

    def claim(
        self,
        jobs: Sequence[Job],
        *,
        lock_until: float,
        calls: Mapping[str, CallRecord] | None = None,
    ) -> list[Claim]:
        calls = calls or {}
        now = self._clock()
        answers: list[Claim] = []
        with self._lock:
            for job in jobs:
                previous = self._records.get((job.request_id, job.key))
                decision = claim_decision(previous, now, redriven=job.redriven)
                if decision not in (Decision.FRESH, Decision.RECOVER, Decision.REDRIVE):
                    answers.append(Claim(job, decision, previous))
                    continue
                record = claimed_record(
                    job, previous, now=now, lock_until=lock_until, token=uuid.uuid4().hex
                )
                call = calls.get(job.key)
                if decision is Decision.RECOVER:
                    # The call that may have run stays the one a recovery repeats.
                    record = replace(record, call_ref=previous.call_ref if previous else None)
                elif call is not None:
                    self._calls[call.ref] = call
                    record = replace(record, call_ref=call.ref)
                self._records[(job.request_id, job.key)] = record
                answers.append(Claim(job, decision, record, previous))
        return answers

    def release(self, claims: Sequence[Claim]) -> None:
        now = self._clock()
        with self._lock:
            for claim in claims:
                current = self._current(claim)
                if current is None or current.state is not JobState.IN_PROGRESS:
                    continue
                # As ``ledger_items.release_op``: a job new to the ledger becomes RETRY with
                # no attempt (the DynamoDB claim's cheap first try reads nothing to restore).
                previous = claim.previous or replace(
                    current, state=JobState.RETRY, attempts=current.attempts - 1, call_ref=None
                )
                state = previous.state
                if state is JobState.IN_PROGRESS:
                    state = JobState.UNCERTAIN
                self._records[self._key(claim)] = replace(
                    previous, state=state, updated_at=now, lock_expires=None, claim_token=None
                )

    def record_calls(self, claims: Sequence[Claim], calls: Mapping[str, CallRecord]) -> None:
        with self._lock:
            for claim in claims:
                call = calls.get(claim.job.key)
                current = self._current(claim)
                if call is None or current is None:
                    continue
                self._calls[call.ref] = call
                self._records[self._key(claim)] = replace(current, call_ref=call.ref)

    def recorded_call(self, ref: str) -> CallRecord | None:
        with self._lock:
            return self._calls.get(ref)

    def finish(self, endings: Sequence[Ending]) -> list[bool]:
        now = self._clock()
        done: list[bool] = []
        with self._lock:
            for end in endings:
                current = self._current(end.claim)
                if current is None:
                    done.append(False)  # our lock expired and someone else holds the job now
                    continue
                keep_lock = end.state is JobState.FAILING
                self._records[self._key(end.claim)] = replace(
                    current,
                    state=end.state,
                    result_id=end.result.resource_id if end.result else current.result_id,
                    detail=dict(end.result.detail) if end.result else current.detail,
                    error_class=end.error_class,
                    # A redriven job that succeeds shows no old reason.
                    last_error=None
                    if end.state is JobState.SUCCEEDED
                    else end.error or current.last_error,
                    updated_at=now,
                    lock_expires=end.lock_until if keep_lock else None,
                    claim_token=current.claim_token if keep_lock else None,
                    ending=end.ending if keep_lock else None,
                )
                done.append(True)
        return done

    def hold(
        self,
        jobs: Sequence[Job],
        *,
        ending: JobState,
        error_class: str,
        error: str,
        lock_until: float,
    ) -> list[Claim]:
        now = self._clock()
        answers: list[Claim] = []
        with self._lock:
            for job in jobs:
                previous = self._records.get((job.request_id, job.key))
                decision = hold_decision(previous, now)
                if decision is not Decision.HELD:
                    answers.append(Claim(job, decision, previous))
                    continue
                base = previous or claimed_record(
                    job, None, now=now, lock_until=lock_until, token=""
                )
                resumed = base.state is JobState.FAILING  # its letter writer died: same letter
                record = replace(
                    base,
                    state=JobState.FAILING,
                    ending=base.ending if resumed else ending,
                    error_class=base.error_class if resumed else error_class,
                    last_error=base.last_error if resumed else error,
                    updated_at=now,
                    lock_expires=lock_until,
                    claim_token=uuid.uuid4().hex,
                    may_have_run=base.may_have_run or base.state is JobState.UNCERTAIN,
                )
                self._records[(job.request_id, job.key)] = record
                answers.append(Claim(job, Decision.HELD, record, previous))
        return answers

    def lettered(self, claims: Sequence[Claim]) -> None:
        now = self._clock()
        with self._lock:
            for claim in claims:
                current = self._current(claim)
                if current is None or current.state is not JobState.FAILING:
                    continue
                self._records[self._key(claim)] = replace(
                    current,
                    state=current.ending or JobState.FAILED,
                    ending=None,
                    updated_at=now,
                    lock_expires=None,
                    claim_token=None,
                )

    def jobs(self, request_id: str) -> list[JobRecord]:
        with self._lock:
            return sorted_records([r for (rid, _), r in self._records.items() if rid == request_id])

    def dead_lettered(self, message_id: str) -> bool:
        with self._lock:
            return message_id in self._dead_letters

    def mark_dead_lettered(self, message_id: str) -> None:
        with self._lock:
            self._dead_letters.add(message_id)

    @staticmethod
    def _key(claim: Claim) -> tuple[str, str]:
        return (claim.job.request_id, claim.job.key)

    def _current(self, claim: Claim) -> JobRecord | None:
        """The job's record if ``claim`` still holds it."""
        current = self._records.get(self._key(claim))
        if current is None or not claim.token or current.claim_token != claim.token:
            return None
        return current
