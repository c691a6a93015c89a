"""The shared ledger in DynamoDB (item layout and conditions: ``ledger_items``).

Claims and endings are written in ``TransactWriteItems`` of up to 100 items (one request for a
whole call's or lane's jobs instead of one per job), every item conditional. A job is first
claimed with the cheap condition "new or RETRY"; a job found in another state is classified by
``claim_decision`` (the item comes back with the failed condition) and, if it may be claimed (a
recovery or a redrive), claimed again with a compare-and-set on the state and ``updated_at`` it
was seen with.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from handler import ledger_items as items
from handler.dynamo import MAX_TRANSACTION_ITEMS, ROUNDS, Table, chunks, expires
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

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["DynamoDBLedger"]

# A claim writes its call's record in the same transaction: half the items for jobs.
_CLAIMS_PER_TRANSACTION: Final = MAX_TRANSACTION_ITEMS // 2
_GOES_AHEAD: Final = frozenset({Decision.FRESH, Decision.RECOVER, Decision.REDRIVE, Decision.HELD})


@dataclass
class _Write:
    """One job's item in a transaction, and the record it was built against."""

    job: Job
    op: dict[str, Any]
    seen: JobRecord | None = None


class DynamoDBLedger:
    def __init__(
        self,
        table: str,
        client_factory: Callable[[], DynamoDBClient],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = Table(table, client_factory)
        self._clock = clock

    def claim(
        self,
        jobs: Sequence[Job],
        *,
        lock_until: float,
        calls: Mapping[str, CallRecord] | None = None,
    ) -> list[Claim]:
        calls = calls or {}
        now, table = self._clock(), self._table.name
        answers: dict[str, Claim] = {}
        claiming = {"now": now, "lock_until": lock_until}
        for chunk in chunks(jobs, _CLAIMS_PER_TRANSACTION):
            tokens = {job.key: uuid.uuid4().hex for job in chunk}

            def decide(job: Job, found: JobRecord | None) -> Decision:
                return claim_decision(found, now, redriven=job.redriven)

            def write(
                job: Job, seen: JobRecord | None, tokens: Mapping[str, str] = tokens
            ) -> _Write:
                op = items.claim_update(
                    table,
                    job,
                    seen,
                    token=tokens[job.key],
                    call=calls.get(job.key),
                    recovering=_recovering(job, seen, now),
                    **claiming,
                )
                return _Write(job, op, seen)

            refs = {calls[j.key].ref: calls[j.key] for j in chunk if j.key in calls}
            extra = [items.call_put(table, call, now) for call in refs.values()]
            for job, decision, seen in _rounds(self._table, chunk, write, decide, extra=extra):
                if decision in _GOES_AHEAD:
                    record = items.claimed_record(
                        job,
                        seen,
                        token=tokens[job.key],
                        call=calls.get(job.key),
                        recovering=decision is Decision.RECOVER,
                        **claiming,
                    )
                    answers[job.key] = Claim(job, decision, record, previous=seen)
                else:
                    answers[job.key] = Claim(job, decision, seen)
        return [answers[job.key] for job in jobs]

    def release(self, claims: Sequence[Claim]) -> None:
        now, table = self._clock(), self._table.name
        for chunk in chunks(claims, MAX_TRANSACTION_ITEMS):
            # A claim that is no longer ours is left as it is: its job is someone else's now.
            self._table.write_all([items.release_op(table, c, now) for c in chunk])

    def record_calls(self, claims: Sequence[Claim], calls: Mapping[str, CallRecord]) -> None:
        now, table = self._clock(), self._table.name
        held = [c for c in claims if c.job.key in calls]
        for chunk in chunks(held, _CLAIMS_PER_TRANSACTION):
            ops = [
                items.record_call_update(table, c.job, ref=calls[c.job.key].ref, token=c.token)
                for c in chunk
            ]
            refs = {calls[c.job.key].ref: calls[c.job.key] for c in chunk}
            ops += [items.call_put(table, call, now) for call in refs.values()]
            # A claim that is no longer ours records nothing: its job runs elsewhere.
            self._table.write_all(ops)

    def recorded_call(self, ref: str) -> CallRecord | None:
        item = self._table.get(items.call_key(ref))
        return items.call_record(ref, item) if item else None

    def finish(self, endings: Sequence[Ending]) -> list[bool]:
        now, table = self._clock(), self._table.name
        done: list[bool] = []
        for chunk in chunks(endings, MAX_TRANSACTION_ITEMS):
            results = self._table.write_all([items.finish_update(table, e, now) for e in chunk])
            for end, result in zip(chunk, results, strict=True):
                # A write whose answer was lost and that botocore retried fails its condition:
                # the item then carries our token as the last one that ended it.
                found = result.item or {}
                done.append(
                    result.written or found.get("last_token", {}).get("S") == end.claim.token
                )
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
        now, table = self._clock(), self._table.name
        answers: dict[str, Claim] = {}
        reason = items.HoldReason(ending, error_class, error)
        holding = {"now": now, "lock_until": lock_until}
        for chunk in chunks(jobs, MAX_TRANSACTION_ITEMS):
            tokens = {job.key: uuid.uuid4().hex for job in chunk}

            def write(
                job: Job, seen: JobRecord | None, tokens: Mapping[str, str] = tokens
            ) -> _Write:
                op = items.hold_update(
                    table, job, seen, token=tokens[job.key], reason=reason, **holding
                )
                return _Write(job, op, seen)

            def decide(_job: Job, found: JobRecord | None) -> Decision:
                return hold_decision(found, now)

            for job, decision, seen in _rounds(
                self._table, chunk, write, decide, granted=Decision.HELD
            ):
                if decision is Decision.HELD:
                    record = items.held_record(
                        job, seen, token=tokens[job.key], reason=reason, **holding
                    )
                    answers[job.key] = Claim(job, decision, record, previous=seen)
                else:
                    answers[job.key] = Claim(job, decision, seen)
        return [answers[job.key] for job in jobs]

    def lettered(self, claims: Sequence[Claim]) -> None:
        now, table = self._clock(), self._table.name
        for chunk in chunks(claims, MAX_TRANSACTION_ITEMS):
            self._table.write_all([items.letter_update(table, c.job, c.token, now) for c in chunk])

    # A message dead-lettered whole (bad input) is remembered by its id, so a duplicate delivery
    # (its acknowledgement was lost) is not dead-lettered a second time.
    def dead_lettered(self, message_id: str) -> bool:
        return self._table.get(items.message_key(message_id)) is not None

    def mark_dead_lettered(self, message_id: str) -> None:
        key = items.message_key(message_id)
        self._table.put({**key, "expires_at": expires(self._clock())})

    def jobs(self, request_id: str) -> list[JobRecord]:
        # Job keys are hex; other items of a request (its record) start with '#'.
        found = self._table.partition(request_id)
        return sorted_records(
            [items.job_record(i) for i in found if not i["sk"]["S"].startswith("#")]
        )


def _recovering(job: Job, seen: JobRecord | None, now: float) -> bool:
    return seen is not None and claim_decision(seen, now, redriven=job.redriven) is Decision.RECOVER


def _rounds(
    table: Table,
    jobs: Sequence[Job],
    write: Callable[[Job, JobRecord | None], _Write],
    decide: Callable[[Job, JobRecord | None], Decision],
    *,
    extra: Sequence[dict[str, Any]] = (),
    granted: Decision = Decision.FRESH,
) -> Iterator[tuple[Job, Decision, JobRecord | None]]:
    """Write every job's item in one transaction; classify those whose condition fails by
    the item as found, and write those that may go ahead again against what was seen.

    Yields (job, decision, the record the write was built against / found)."""
    pending = {job.key: write(job, None) for job in jobs}
    decided: dict[str, Decision] = dict.fromkeys(pending, granted)
    for _ in range(ROUNDS):
        if not pending:
            return
        writes = list(pending.values())
        results = table.write_all([w.op for w in writes], extra, atomic_retry=False)
        for w, result in zip(writes, results, strict=True):
            if result.written:
                del pending[w.job.key]
                yield w.job, decided[w.job.key], w.seen
            elif result.condition_failed:
                found = items.job_record(result.item) if result.item else None
                decision = decide(w.job, found)
                if decision in _GOES_AHEAD:
                    decided[w.job.key] = decision
                    pending[w.job.key] = write(w.job, found)
                else:
                    del pending[w.job.key]
                    yield w.job, decision, found
            # else: failed for another item's sake - written again as it is
    for w in pending.values():  # contention beyond reason: treat as held elsewhere
        yield w.job, Decision.BUSY, w.seen
