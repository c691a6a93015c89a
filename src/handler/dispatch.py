"""Run the jobs of one batch: plan calls, respect rate keys, run accounts in parallel.

Calls that share a rate key (account, region, API) form a lane and run one after another through
that key's token bucket; lanes run concurrently in a bounded thread pool. Each job ends with one
:class:`JobOutcome`: succeeded, retry (redeliver) or failed (dead-letter).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger

from handler.blast_radius import FailureCount, pass_canaries
from handler.credentials import SessionCache, partition_of
from handler.deadline import Deadline
from handler.exceptions import (
    DeadlineExceededError,
    FanoutError,
    JobBusyError,
    NotRunError,
    PermanentError,
    RetryableError,
    ThrottledError,
    TransientError,
    classify_aws_error,
)
from handler.ledger import Claim, Ledger, LedgerState
from handler.outcome import JobOutcome, JobState
from handler.policy import session_policy
from handler.ratelimit import RateLimiter, TokenBucket
from handler.retry import call_with_retry
from handler.telemetry import BatchMetrics
from tasks.base import Call, Job, Task, TaskResult
from tasks.registry import get_task

__all__ = ["Dispatcher", "JobOutcome", "JobState"]

logger = Logger(child=True)

LOCK_MARGIN_SECONDS = 5.0


class _TargetContext:
    """The :class:`TaskContext` handed to a plugin's ``run``."""

    def __init__(
        self, sessions: SessionCache, call: Call, task: Task, *, resource_scope: bool
    ) -> None:
        self._sessions = sessions
        self._call = call
        self._task = task
        self._resource_scope = resource_scope
        # Calls of non-idempotent tasks get no botocore retries: a retried 5xx could run twice.
        self._attempts = 2 if task.idempotent else 1

    @property
    def account(self) -> str:
        return self._call.account

    @property
    def region(self) -> str:
        return self._call.region

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        account = account or self._call.account
        region = region or self._call.region
        # The narrowest scope is the call's own resources; the default scope is the task's
        # resources in the account, which keeps one session (one STS call) per account.
        own = account == self._call.account and self._resource_scope
        policy = session_policy(
            self._task, partition_of(region), account, self._call.params if own else None
        )
        return self._sessions.client(
            service,
            account=account,
            region=region,
            request_id=self._call.request_ids[0],
            max_attempts=self._attempts,
            policy=policy,
            read_timeout=self._task.read_timeout,
        )


class _Durations:
    """How long a task's calls take here; the time budget reserves that before starting one."""

    def __init__(self, default_s: float = 2.0) -> None:
        self._default = default_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def expected(self, task: str) -> float:
        return self._seen.get(task, self._default)

    def record(self, task: str, seconds: float) -> None:
        with self._lock:
            previous = self._seen.get(task)
            # Decay slowly, jump up at once: a slow call must widen the margin immediately.
            self._seen[task] = seconds if previous is None else max(seconds, 0.8 * previous)


class Dispatcher:
    """Runs jobs against target accounts; one per execution environment."""

    def __init__(
        self,
        sessions: SessionCache,
        limiter: RateLimiter,
        ledger: Ledger,
        *,
        max_workers: int,
        resource_scoped_sessions: bool = False,
    ) -> None:
        self._sessions = sessions
        self._limiter = limiter
        self._ledger = ledger
        self._max_workers = max_workers
        self._resource_scope = resource_scoped_sessions
        self._durations = _Durations()

    def run(
        self, jobs: Sequence[Job], deadline: Deadline, metrics: BatchMetrics | None = None
    ) -> dict[str, JobOutcome]:
        """Outcomes by job key, one for every job given."""
        metrics = metrics or BatchMetrics()
        outcomes: dict[str, JobOutcome] = {}
        live: list[Job] = []
        for job in jobs:
            if job.dry_run:
                outcomes[job.key] = _dry_run(job)
            else:
                live.append(job)
        failures = FailureCount()
        with ThreadPoolExecutor(
            max_workers=max(1, min(self._max_workers, len(live))), thread_name_prefix="fanout"
        ) as pool:
            run_jobs = partial(
                self._run_jobs,
                pool,
                deadline=deadline,
                outcomes=outcomes,
                failures=failures,
                metrics=metrics,
            )
            # Canaries (and everything not gated by one) first; gated jobs only after their
            # message's canary succeeded.
            run_jobs([j for j in live if not j.after_canary])
            gated = [j for j in live if j.after_canary]
            ready = pass_canaries(gated, outcomes)
            held = [outcomes[j.key] for j in gated if j.key in outcomes]
            outcomes.update((o.job.key, o) for o in self.record_held(held, deadline))
            run_jobs(ready)
        return outcomes

    def _run_jobs(
        self,
        pool: ThreadPoolExecutor,
        jobs: Sequence[Job],
        *,
        deadline: Deadline,
        outcomes: dict[str, JobOutcome],
        failures: FailureCount,
        metrics: BatchMetrics,
    ) -> None:
        lanes: dict[tuple[str, str, str], list[tuple[Task, Call]]] = defaultdict(list)
        by_task: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            by_task[job.task].append(job)
        for name, task_jobs in by_task.items():
            task = get_task(name)
            for call in task.plan(task_jobs):
                lanes[task.rate_key(call)].append((task, call))
        futures = [
            pool.submit(self._run_lane, lane, deadline, failures, metrics)
            for lane in lanes.values()
        ]
        for future in futures:
            outcomes.update((o.job.key, o) for o in future.result())

    def record_held(self, held: Sequence[JobOutcome], deadline: Deadline) -> list[JobOutcome]:
        """Record targets a blast-radius control held back, so a duplicate delivery of their
        message cannot run them after all (a held-back target ends like a failed one)."""
        failed = [o for o in held if o.state is JobState.FAILED]
        claims, settled = self._claim([o.job for o in failed], deadline)
        ended = [self._record(claims[o.job.key], o) for o in failed if o.job.key in claims]
        return ended + settled + [o for o in held if o.state is not JobState.FAILED]

    def _claim(
        self, jobs: Sequence[Job], deadline: Deadline
    ) -> tuple[dict[str, Claim], list[JobOutcome]]:
        """Claim jobs in the ledger just before their call; settle those that must not run."""
        # The lock lasts until this function would have timed out, plus a little.
        lock_seconds = deadline.remaining_ms() / 1000.0 + LOCK_MARGIN_SECONDS
        claims: dict[str, Claim] = {}
        settled: list[JobOutcome] = []
        for job in jobs:
            try:
                claim = self._ledger.claim(job, lock_seconds=lock_seconds)
            except Exception as exc:  # noqa: BLE001 - a ledger outage means: try later
                settled.append(JobOutcome(job, JobState.RETRY, error=classify_aws_error(exc)))
                continue
            if claim.granted:
                claims[job.key] = claim
            elif claim.record.state is LedgerState.SUCCEEDED:
                # A redelivery of finished work: replay the stored result, run nothing.
                result = TaskResult(
                    claim.record.result_id or "", {**claim.record.detail, "replayed": True}
                )
                settled.append(JobOutcome(job, JobState.SUCCEEDED, result=result, replayed=True))
            elif claim.record.state is LedgerState.FAILED:
                # Already dead-lettered: a duplicate delivery must not run or dead-letter it again.
                error = NotRunError(f"already dead-lettered: {claim.record.last_error}")
                settled.append(JobOutcome(job, JobState.FAILED, error=error, replayed=True))
            else:
                busy = JobBusyError(f"job {job.key} is in progress in another invocation")
                settled.append(JobOutcome(job, JobState.RETRY, error=busy))
        return claims, settled

    def _record(self, claim: Claim, outcome: JobOutcome) -> JobOutcome:
        """Write the outcome to the ledger; if that fails, the job has not ended yet.

        Its message then comes back: the job's lock expires, and the next claim is a recovery
        (the plugin looks for the effect before running again), so the job ends known.
        """
        state = {
            JobState.SUCCEEDED: LedgerState.SUCCEEDED,
            JobState.FAILED: LedgerState.FAILED,
            JobState.RETRY: LedgerState.RETRY,
        }[outcome.state]
        if outcome.state is JobState.RETRY and isinstance(outcome.error, TransientError):
            # A 5xx, timeout or unexpected error after the call was sent: it may have run. The
            # next attempt looks for its effect before running again.
            state = LedgerState.UNCERTAIN
        try:
            self._ledger.finish(
                claim,
                state,
                result_id=outcome.result.resource_id if outcome.result else None,
                error_class=outcome.error.error_class if outcome.error else None,
                error=outcome.error.reason if outcome.error else None,
                detail=outcome.result.detail if outcome.result else None,
            )
        except Exception as exc:  # noqa: BLE001 - any ledger failure: the job is not done
            logger.warning(
                "could not record job outcome",
                extra={"job_key": claim.record.job_key, "reason": str(exc)},
            )
            if outcome.state is JobState.RETRY:
                return outcome
            error = TransientError(f"{outcome.state} but not recorded in the ledger: {exc}")
            return JobOutcome(outcome.job, JobState.RETRY, error=error)
        return outcome

    def _run_lane(
        self,
        lane: list[tuple[Task, Call]],
        deadline: Deadline,
        failures: FailureCount,
        metrics: BatchMetrics,
    ) -> list[JobOutcome]:
        """Run one rate key's calls in order; the ledger is read and written call by call, so
        its round trips overlap the other lanes' work instead of forming phases of their own."""
        outcomes: list[JobOutcome] = []
        stop: RetryableError | None = None
        for task, call in lane:
            if stop is None and not deadline.allows(self._durations.expected(task.name)):
                stop = DeadlineExceededError(
                    f"not started: {deadline.remaining_s():.1f}s left, a call takes "
                    f"~{self._durations.expected(task.name):.1f}s"
                )
            if stop is not None:
                # The lane's quota is exhausted or time is up: the rest waits for redelivery.
                outcomes.extend(_settle(call.jobs, JobState.RETRY, error=stop))
                continue
            held, runnable = failures.hold_back(call.jobs)
            claims, settled = self._claim(runnable, deadline)
            outcomes.extend(self.record_held(held, deadline) + settled)
            granted = [j for j in runnable if j.key in claims]
            # Some jobs are held back, done already or busy elsewhere: plan the rest anew.
            calls = [call] if len(granted) == len(call.jobs) else task.plan(granted)
            for each in calls:
                if stop is None:
                    recovered = any(claims[j.key].recovered for j in each.jobs)
                    done = self._run_call(task, each, deadline, metrics, recovered=recovered)
                    error = done[0].error
                    if isinstance(error, ThrottledError | DeadlineExceededError):
                        stop = error
                else:
                    done = _settle(each.jobs, JobState.RETRY, error=stop)
                failures.add(o.job for o in done if o.state is JobState.FAILED)
                outcomes.extend(self._record(claims[o.job.key], o) for o in done)
        return outcomes

    def _run_call(
        self,
        task: Task,
        call: Call,
        deadline: Deadline,
        metrics: BatchMetrics,
        *,
        recovered: bool = False,
    ) -> list[JobOutcome]:
        expected = self._durations.expected(task.name)
        if not deadline.allows(expected):
            error = DeadlineExceededError(
                f"not started: {deadline.remaining_s():.1f}s left, a call takes ~{expected:.1f}s"
            )
            return _settle(call.jobs, JobState.RETRY, error=error)
        key = task.rate_key(call)
        bucket = self._limiter.bucket(key, task.rate)
        context = _TargetContext(self._sessions, call, task, resource_scope=self._resource_scope)

        def attempt() -> TaskResult:
            try:
                if recovered:
                    previous = task.find_previous(context, call)
                    if previous is not None:
                        return previous
                self._limiter.acquire(key, task.rate, max_wait=deadline.remaining_s() - expected)
                return task.run(context, call)
            except Exception as exc:
                raise classify_aws_error(exc, quota_codes=task.quota_codes) from exc

        started = time.monotonic()
        try:
            result = call_with_retry(
                attempt,
                idempotent=task.idempotent,
                deadline=deadline,
                on_retry=lambda e: _log_retry(key, bucket, e, metrics, task.name),
            )
        except PermanentError as exc:
            return _settle(call.jobs, JobState.FAILED, error=exc)
        except RetryableError as exc:
            if isinstance(exc, ThrottledError):
                bucket.throttled()
                metrics.count("Throttles", task.name)
            return _settle(call.jobs, JobState.RETRY, error=exc)
        finally:
            elapsed = time.monotonic() - started
            self._durations.record(task.name, elapsed)
            metrics.duration(task.name, elapsed)
        bucket.succeeded()
        return _settle(call.jobs, JobState.SUCCEEDED, result=result)


def _log_retry(
    key: tuple[str, str, str],
    bucket: TokenBucket,
    error: FanoutError,
    metrics: BatchMetrics,
    task: str,
) -> None:
    if isinstance(error, ThrottledError):
        bucket.throttled()
        metrics.count("Throttles", task)
    logger.info(
        "retrying call",
        extra={"account": key[0], "api": key[2], "error_class": error.error_class},
    )


def _settle(
    jobs: Iterable[Job],
    state: JobState,
    *,
    result: TaskResult | None = None,
    error: FanoutError | None = None,
) -> list[JobOutcome]:
    return [JobOutcome(job=j, state=state, result=result, error=error) for j in jobs]


def _dry_run(job: Job) -> JobOutcome:
    return JobOutcome(
        job=job,
        state=JobState.SUCCEEDED,
        result=TaskResult(resource_id="dry-run", detail={"would_run": job.task}),
    )
