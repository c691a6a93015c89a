"""One call's attempt, as a lane runs it: claim its jobs in the ledger (one transaction), turn
the granted claims into calls (the call itself; the rest re-planned when some were refused; a
recovered job's recorded call), make each call (``handler.execute``), and record how each job
ended. A job whose end cannot be written has not ended: it is retried.

Ends are written at once, or with other calls' ends in one transaction (:class:`Endings`) when
nothing in the batch waits for them and the task's unknown outcome can be settled.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from handler.deadline import Deadline
from handler.dynamo import MAX_TRANSACTION_ITEMS
from handler.exceptions import (
    ConfigurationError,
    FanoutError,
    JobBusyError,
    NotRunError,
    NotStartedError,
    PermanentError,
    RecordedFailure,
    TransientError,
    classify_aws_error,
)
from handler.execute import CallOutcome, CallRunner
from handler.ledger import CallRecord, Claim, Decision, Ending, JobState, Ledger
from handler.outcome import JobOutcome, Result
from handler.requests import RequestView
from handler.telemetry import BatchMetrics
from tasks.base import Call, Job, Task, TaskResult

__all__ = ["Attempts", "BatchScope", "CallEnd", "ClaimsAhead", "Endings", "outcomes_for"]

logger = Logger(child=True)

# What a recovery looks back over when no first claim time is known (a record past its TTL).
_UNKNOWN_START_LOOKBACK_S = 24 * 3600.0
# Jobs a lane claims ahead at once: one transaction's worth (each job's item and, at most as
# many again, the coalesced calls' records).
_CLAIM_AHEAD_JOBS = MAX_TRANSACTION_ITEMS // 2


@dataclass(frozen=True, slots=True)
class BatchScope:
    """What every attempt of one batch shares."""

    views: Mapping[str, RequestView]
    deadline: Deadline
    lock_until: float  # the claims' lock (handler.ledger.lock_until)
    metrics: BatchMetrics


@dataclass(frozen=True, slots=True)
class _Work:
    """A call to make, the claims it ends, and since when a recovery looks for its effect."""

    call: Call
    claims: list[Claim]
    since: float | None = None


@dataclass(frozen=True, slots=True)
class CallEnd:
    """A call that ended, and the claims whose end is still to be written."""

    claims: Sequence[Claim]
    outcome: CallOutcome
    verdict: tuple[JobState, Result]


class Attempts:
    def __init__(
        self, ledger: Ledger, runner: CallRunner, clock: Callable[[], float] = time.time
    ) -> None:
        self._ledger = ledger
        self._runner = runner
        self._clock = clock

    def run(
        self,
        task: Task,
        call: Call,
        scope: BatchScope,
        endings: Endings | None = None,
        ahead: ClaimsAhead | None = None,
    ) -> tuple[list[JobOutcome], list[FanoutError]]:
        """Claim, run and record one planned call: one outcome per job of it (those whose end
        ``endings`` writes later come from it), and the errors its calls ended with. The claims
        come from ``ahead`` when its lane claimed them before."""
        try:
            claims = ahead.claims_for(call) if ahead is not None else None
            if claims is None:
                claims = self._ledger.claim(
                    call.jobs, lock_until=scope.lock_until, calls=_recorded(task, call)
                )
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a ledger outage: nothing started, try later
            reason = classify_aws_error(exc).reason
            error = NotStartedError(f"not started: ledger unavailable: {reason}")
            return outcomes_for(call.jobs, Result.RETRY, error=error), []
        outcomes = [_refused(c) for c in claims if not c.granted]
        fresh = [c for c in claims if c.decision in (Decision.FRESH, Decision.REDRIVE)]
        recover = [c for c in claims if c.decision is Decision.RECOVER]
        work = self._fresh(task, call, fresh, len(claims)) if fresh else []
        work += self._recovery(task, recover)
        errors: list[FanoutError] = []
        for each in work:
            if each.call.jobs[0].dry_run:
                outcome = self._runner.preflight(task, each.call)
                state, result = JobState.DRY_RUN, Result.DRY_RUN
            else:
                outcome = self._runner.run(
                    task, each.call, scope.deadline, scope.metrics, recover_since=each.since
                )
                state, result = _ending(outcome.result, outcome.error)
            if outcome.error is not None:
                errors.append(outcome.error)
            ended = CallEnd(each.claims, outcome, (state, result))
            if endings is not None and _may_defer(task, each.claims, scope):
                endings.add(ended)
            else:
                outcomes += self.record([ended], scope)
        return outcomes, errors

    def claims_ahead(self, calls: Sequence[tuple[Task, Call]], scope: BatchScope) -> ClaimsAhead:
        """The claims a lane of ``calls`` takes ahead (none unless it is a plain lane)."""
        return ClaimsAhead(self._ledger, calls, scope)

    def _fresh(self, task: Task, call: Call, fresh: list[Claim], claimed: int) -> list[_Work]:
        if len(fresh) == claimed:
            return [_Work(call, fresh)]
        # Some jobs were done already or busy elsewhere: plan the rest anew, and point their
        # claims at the calls they are now part of.
        by_key = {c.job.key: c for c in fresh}
        calls = task.plan([c.job for c in fresh])
        records = {k: r for each in calls for k, r in _recorded(task, each).items()}
        if records:
            self._ledger.record_calls(fresh, records)
        return [_Work(each, [by_key[j.key] for j in each.jobs]) for each in calls]

    def _recovery(self, task: Task, recover: list[Claim]) -> list[_Work]:
        """Calls for jobs whose earlier attempt may have taken effect: the recorded call itself
        (a coalesced call is repeated exactly, CallerReference and all), else the job's own."""
        work: list[_Work] = []
        by_ref: dict[str, list[Claim]] = defaultdict(list)
        alone: list[Claim] = []
        for claim in recover:
            ref = claim.previous.call_ref if claim.previous else None
            (by_ref[ref] if ref else alone).append(claim)
        for ref, group in by_ref.items():
            recorded = self._ledger.recorded_call(ref)
            if recorded is None:  # recorded with the claim; gone only past its TTL
                alone += group
                continue
            call = Call(
                task=recorded.task,
                account=recorded.account,
                region=recorded.region,
                params=recorded.params,
                jobs=tuple(c.job for c in group),
                idempotency_key=recorded.ref,
            )
            work.append(_Work(call, group, self._since(group)))
        for claim in alone:
            [call] = task.plan([claim.job])
            work.append(_Work(call, [claim], self._since([claim])))
        return work

    def _since(self, claims: Sequence[Claim]) -> float:
        """The earliest first claim of these jobs: any effect of theirs happened after it."""
        times = [c.previous.created_at for c in claims if c.previous and c.previous.created_at]
        return min(times) if times else self._clock() - _UNKNOWN_START_LOOKBACK_S

    def record(self, ended: Sequence[CallEnd], scope: BatchScope) -> list[JobOutcome]:
        """Write the calls' ends for each of their jobs (one transaction per 100 jobs); a job
        whose end cannot be written has not ended."""
        endings = [
            _ending_of(c, e.verdict[0], e.outcome.result, e.outcome.error, scope.lock_until)
            for e in ended
            for c in e.claims
        ]
        try:
            written = iter(self._ledger.finish(endings))
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - any ledger failure: the job is not done
            logger.warning(
                "could not record job outcomes", extra={"reason": str(exc), "jobs": len(endings)}
            )
            failed: list[JobOutcome] = []
            for e in ended:
                error, result = e.outcome.error, e.verdict[1]
                if result is not Result.RETRY:
                    error = TransientError(f"{result} but not recorded in the ledger: {exc}")
                failed += outcomes_for([c.job for c in e.claims], Result.RETRY, error=error)
            return failed
        outcomes: list[JobOutcome] = []
        for e in ended:
            (state, result), task_result, error = e.verdict, e.outcome.result, e.outcome.error
            for claim in e.claims:
                if not next(written):
                    busy = JobBusyError(f"job {claim.job.key} was taken over by another invocation")
                    outcomes.append(JobOutcome(claim.job, Result.RETRY, error=busy))
                    continue
                view = scope.views.get(claim.job.request_id)
                if view is not None and state in (JobState.SUCCEEDED, JobState.FAILING):
                    view.ended(
                        claim.job.key,
                        JobState.SUCCEEDED if task_result else JobState.FAILED,
                        region=claim.job.region,
                    )
                letter = claim if state is JobState.FAILING else None
                outcomes.append(
                    JobOutcome(claim.job, result, task_result, error=error, letter_claim=letter)
                )
        return outcomes


class ClaimsAhead:
    """A lane's claims taken ahead: when its first call starts, the jobs of its next calls are
    claimed with it in one transaction (up to 50 jobs; the next window when those are used),
    instead of one claim write per call.

    Only for a plain lane (``_may_claim_ahead``): every task's unknown outcome can be settled,
    no dry run, and nothing in the batch reads its ends. A claim taken and not used (the lane
    stopped on a throttle or the deadline, or a call was re-planned) is released - the job as
    it was before, recorded call and all (``Ledger.release``) - so a job is never left to
    recovery for a call that did not start. If the holder dies before releasing, the jobs are
    IN_PROGRESS under its lock, and the next claimant recovers them: it repeats the identical
    recorded call or looks for its effect, finds none, and runs it once. Claiming ahead widens
    what a crash leaves to recovery, never what runs twice (docs/life-of-a-job.md).
    """

    def __init__(self, ledger: Ledger, calls: Sequence[tuple[Task, Call]], scope: BatchScope):
        self._ledger = ledger
        self._scope = scope
        plain = len(calls) > 1 and all(_may_claim_ahead(t, c, scope) for t, c in calls)
        self._calls = list(calls) if plain else []
        self._next = 0  # the first of ``_calls`` not claimed ahead yet
        self._taken: dict[str, Claim] = {}

    def claims_for(self, call: Call) -> list[Claim] | None:
        """The claims of ``call``'s jobs, claiming the window it begins if it is one of the
        lane's planned calls; None when it must claim its jobs itself (a call planned anew,
        whose jobs' claims taken ahead are released first, or the window's claim failed)."""
        index = next((i for i, (_, c) in enumerate(self._calls) if c is call), None)
        if index is None:
            self.release([j.key for j in call.jobs])
            return None
        if index >= self._next:
            self._claim_window(index)
        if any(j.key not in self._taken for j in call.jobs):
            self.release([j.key for j in call.jobs])
            return None
        return [self._taken.pop(j.key) for j in call.jobs]

    def _claim_window(self, start: int) -> None:
        window: list[tuple[Task, Call]] = []
        size = 0
        for task, call in self._calls[start:]:
            if window and size + len(call.jobs) > _CLAIM_AHEAD_JOBS:
                break
            window.append((task, call))
            size += len(call.jobs)
        self._next = start + len(window)
        jobs = [j for _, c in window for j in c.jobs]
        records = {k: r for t, c in window for k, r in _recorded(t, c).items()}
        try:
            claims = self._ledger.claim(jobs, lock_until=self._scope.lock_until, calls=records)
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - each call claims (and reports) on its own
            logger.warning("could not claim ahead", extra={"reason": str(exc), "jobs": len(jobs)})
            return
        self._taken.update((c.job.key, c) for c in claims)

    def release(self, keys: Iterable[str] | None = None) -> None:
        """Release the granted claims taken ahead and not used (of ``keys``; all by default).
        A release that fails leaves them to recovery once their lock expired."""
        chosen = list(self._taken) if keys is None else [k for k in keys if k in self._taken]
        claims = [self._taken.pop(k) for k in chosen]
        granted = [c for c in claims if c.granted]
        if not granted:
            return
        try:
            self._ledger.release(granted)
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - recovered after the lock, never lost
            logger.warning(
                "could not release claims", extra={"reason": str(exc), "jobs": len(granted)}
            )


class Endings:
    """The ends of a batch's calls still to be written: many calls' ends in one transaction
    instead of one per call (``DynamoDBLedger.finish``: 100 jobs per transaction).

    Written when a lane ends (if no other write of them is under way) and, for the rest, when
    all lanes of the phase ended, always before the batch's outcomes are decided. An end is
    deferred only when (``_may_defer``) nothing else in the batch reads it (the request has no
    max_errors, canary, rollout cap or region order) and the task's unknown outcome can be
    settled: a holder that dies before the write leaves its jobs IN_PROGRESS under its lock,
    and the next claimant recovers them (repeats the identical call or looks it up), so the
    deferral widens what a crash leaves to recovery, never what runs twice.
    """

    def __init__(self, attempts: Attempts, scope: BatchScope) -> None:
        self._attempts = attempts
        self._scope = scope
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._pending: list[CallEnd] = []
        self._outcomes: list[JobOutcome] = []

    def add(self, ended: CallEnd) -> None:
        with self._lock:
            self._pending.append(ended)
            full = sum(len(e.claims) for e in self._pending) >= MAX_TRANSACTION_ITEMS
        if full:  # a transaction's worth: no reason to hold them longer
            self.write(wait=False)

    def write(self, *, wait: bool) -> None:
        """Write what is pending. Without ``wait``, leave it to a write already under way (it
        takes what was added meanwhile) or to the phase's last write."""
        if not self._writing.acquire(blocking=wait):
            return
        try:
            while True:
                with self._lock:
                    pending, self._pending = self._pending, []
                if not pending:
                    return
                outcomes = self._attempts.record(pending, self._scope)
                with self._lock:
                    self._outcomes += outcomes
        finally:
            self._writing.release()

    def outcomes(self) -> list[JobOutcome]:
        """Every deferred job's outcome, once all of them were written."""
        self.write(wait=True)
        with self._lock:
            return list(self._outcomes)


def _may_defer(task: Task, claims: Sequence[Claim], scope: BatchScope) -> bool:
    return task.recoverable and not _read_by_batch([c.job for c in claims], scope)


def _may_claim_ahead(task: Task, call: Call, scope: BatchScope) -> bool:
    return (
        task.recoverable
        and not any(j.dry_run for j in call.jobs)
        and not _read_by_batch(call.jobs, scope)
    )


def _read_by_batch(jobs: Iterable[Job], scope: BatchScope) -> bool:
    """Does a request of these jobs decide what this batch may start from their ends?"""
    for job in jobs:
        view = scope.views.get(job.request_id)
        if view is not None and view.reacts_to_ends:
            return True
    return False


def _ending_of(
    claim: Claim,
    state: JobState,
    result: TaskResult | None,
    error: FanoutError | None,
    lock_until: float,
) -> Ending:
    failing = state is JobState.FAILING
    return Ending(
        claim=claim,
        state=state,
        result=result,
        error_class=error.error_class if error else None,
        error=error.reason if error else None,
        # A failing job stays locked while its letter is sent, then ends FAILED.
        lock_until=lock_until if failing else None,
        ending=JobState.FAILED if failing else None,
    )


def _ending(result: TaskResult | None, error: FanoutError | None) -> tuple[JobState, Result]:
    """The ledger state and the delivery result of a call's end."""
    if result is not None:
        return JobState.SUCCEEDED, Result.SUCCEEDED
    if isinstance(error, PermanentError):
        return JobState.FAILING, Result.FAILED
    if isinstance(error, TransientError):
        # A 5xx, timeout or unexpected error after the call was sent: it may have run. The
        # next attempt settles it (repeat if idempotent, else look it up).
        return JobState.UNCERTAIN, Result.RETRY
    return JobState.RETRY, Result.RETRY


def _recorded(task: Task, call: Call) -> dict[str, CallRecord]:
    """A coalesced idempotent call is recorded with its claims: a recovery in another batch
    must repeat exactly this call (same parameters, same idempotency key)."""
    if not task.idempotent or len(call.jobs) < 2 or not call.idempotency_key:
        return {}
    record = CallRecord(call.idempotency_key, call.task, call.account, call.region, call.params)
    return {job.key: record for job in call.jobs}


def _refused(claim: Claim) -> JobOutcome:
    job, record = claim.job, claim.record
    if claim.decision is Decision.BUSY:
        busy = JobBusyError(f"job {job.key} is in progress in another invocation")
        return JobOutcome(job, Result.RETRY, error=busy)
    if claim.decision is Decision.LETTER:
        # Ended without success, but its letter writer died: this delivery writes the letter.
        reason = record.last_error if record and record.last_error else "failed"
        error_class = record.error_class if record and record.error_class else "PermanentError"
        failure = RecordedFailure(reason, error_class)
        return JobOutcome(job, Result.FAILED, error=failure, ended_as=JobState.FAILING)
    assert record is not None  # noqa: S101 - ENDED always comes with the record found
    if record.state is JobState.SUCCEEDED:
        # A redelivery of finished work: replay the stored result, run nothing.
        result = TaskResult(record.result_id or "", {**record.detail, "replayed": True})
        return JobOutcome(job, Result.SUCCEEDED, task_result=result, replayed=True)
    error = NotRunError(
        f"already ended ({record.state}): {record.last_error or 'no reason recorded'}"
    )
    return JobOutcome(
        job,
        Result.ENDED,
        error=error,
        replayed=True,
        ended_as=record.state,
        origin_message_id=record.message_id,
    )


def outcomes_for(
    jobs: Iterable[Job], result: Result, *, error: FanoutError | None = None
) -> list[JobOutcome]:
    return [JobOutcome(job=j, result=result, error=error) for j in jobs]
