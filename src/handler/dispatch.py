"""Run the jobs of one batch: gate them by their requests, plan calls, run lanes in parallel.

Calls that share a rate key (account, region, API) form a *lane* and run one after another
through that key's token bucket; lanes run concurrently in a bounded thread pool. For each call
a lane checks it may start (lane not stopped, time left for a call of this task, its request
still lets its jobs start), then hands it to ``handler.attempt`` (claim, call, record; ends nothing
else waits for are written together, ``handler.attempt.Endings``). A throttled call or a call
that hit the deadline stops its lane: the rest of the lane is retried later
(``handler.lifecycle`` says when). Every job gets exactly one :class:`JobOutcome`.

Jobs gated by a canary that is in the same batch run in a second phase, after it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from handler.attempt import Attempts, BatchScope, ClaimsAhead, Endings, outcomes_for
from handler.deadline import Deadline
from handler.exceptions import (
    CanaryPendingError,
    DeadlineExceededError,
    FanoutError,
    LaneStoppedError,
    NotRunError,
    NotStartedError,
    ThrottledError,
)
from handler.execute import CallRunner
from handler.ledger import Ledger, lock_until
from handler.outcome import JobOutcome, Result
from handler.requests import RequestView
from handler.rollout import Lease, RolloutGate
from handler.telemetry import BatchMetrics
from tasks.base import Call, Job, Task
from tasks.registry import get_task

__all__ = ["Dispatcher"]


@dataclass
class _Lane:
    """The calls of one rate key, and why the rest of them must not start."""

    calls: list[tuple[Task, Call]] = field(default_factory=list)
    stopped: FanoutError | None = None

    def stop(self, error: FanoutError) -> None:
        if self.stopped is None:
            self.stopped = error

    def blocked(self) -> NotStartedError | None:
        """Why the lane's next call must not start (None: it may)."""
        return _not_started(self.stopped) if self.stopped is not None else None


class Dispatcher:
    """Runs jobs against target accounts; one per execution environment."""

    def __init__(
        self,
        ledger: Ledger,
        runner: CallRunner,
        *,
        max_workers: int,
        rollout: RolloutGate | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._attempts = Attempts(ledger, runner, clock)
        self._rollout = rollout
        self._runner = runner
        self._max_workers = max_workers
        self._clock = clock

    def run(
        self,
        jobs: Sequence[Job],
        views: Mapping[str, RequestView],
        deadline: Deadline,
        metrics: BatchMetrics,
    ) -> dict[str, JobOutcome]:
        """Outcomes by job key, one for every job given."""
        scope = BatchScope(views, deadline, lock_until(self._clock(), deadline), metrics)
        outcomes: dict[str, JobOutcome] = {}
        workers = max(1, min(self._max_workers, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout") as pool:

            def phase(batch: Sequence[Job]) -> None:
                runnable = []
                for job in batch:
                    if (held := _held_back(job, views)) is not None:
                        outcomes[job.key] = held
                    else:
                        runnable.append(job)
                lanes = _lanes(runnable)
                endings = Endings(self._attempts, scope)
                futures = [pool.submit(self._run_lane, lane, scope, endings) for lane in lanes]
                for future in futures:
                    outcomes.update((o.job.key, o) for o in future.result())
                outcomes.update((o.job.key, o) for o in endings.outcomes())

            # Canaries (and everything not gated by one) first; the jobs a canary of this batch
            # gates, after it ended.
            canaries = {j.request_id for j in jobs if _is_canary(j, views)}
            phase([j for j in jobs if not _waits_for_canary(j, canaries, views)])
            phase([j for j in jobs if j.key not in outcomes])
        return outcomes

    def _run_lane(self, lane: _Lane, scope: BatchScope, endings: Endings) -> list[JobOutcome]:
        """Run one rate key's calls in order. Claims are written as the lane goes (its next
        calls' with the first, ``ClaimsAhead``; call by call where the batch reads the ends),
        and ends when the lane is done, so the ledger's round trips overlap the other lanes'
        calls instead of forming phases of their own."""
        ahead = self._attempts.claims_ahead(lane.calls, scope)
        task, first = lane.calls[0]
        try:
            with self._runner.expect_calls(task.rate_key(first), len(lane.calls)):
                return self._run_calls(lane, scope, endings, ahead)
        finally:
            ahead.release()  # what the lane claimed and did not start (stopped, held back)
            endings.write(wait=False)

    def _run_calls(
        self, lane: _Lane, scope: BatchScope, endings: Endings, ahead: ClaimsAhead
    ) -> list[JobOutcome]:
        outcomes: list[JobOutcome] = []
        for task, planned in lane.calls:
            self._stop_if_late(lane, task, scope.deadline)
            # Request-wide controls again, just before the call: other lanes may have failed
            # (max_errors) or finished the canary since this batch began.
            held, calls = _hold_back(task, planned, scope.views)
            outcomes += held
            for call in calls:
                if (blocked := lane.blocked()) is not None:
                    outcomes += outcomes_for(call.jobs, Result.RETRY, error=blocked)
                    continue
                waiting, admitted, leases = self._admit_rollout(task, call, scope)
                outcomes += waiting
                try:
                    for each in admitted:
                        done, errors = self._attempts.run(task, each, scope, endings, ahead)
                        outcomes += done
                        for error in errors:
                            if isinstance(error, ThrottledError | DeadlineExceededError):
                                lane.stop(error)
                finally:
                    if self._rollout is not None:
                        self._rollout.release(leases)
        return outcomes

    def _admit_rollout(
        self, task: Task, call: Call, scope: BatchScope
    ) -> tuple[list[JobOutcome], list[Call], list[Lease]]:
        """The call's jobs that must wait for a slot of their request (``handler.rollout``),
        the calls for the rest, and the leases those hold until their call ended."""
        if self._rollout is None:
            return [], [call], []
        waiting: list[JobOutcome] = []
        keep: list[Job] = []
        leases: list[Lease] = []
        for job in call.jobs:
            view = scope.views.get(job.request_id)
            admitted = (
                self._rollout.admit(
                    job,
                    view,
                    lease_until=scope.lock_until,
                    expected_s=self._runner.expected(task),
                )
                if view is not None
                else None
            )
            if isinstance(admitted, Lease):
                leases.append(admitted)
            if admitted is None or isinstance(admitted, Lease):
                keep.append(job)
            else:
                waiting.append(JobOutcome(job, Result.RETRY, error=admitted))
        if not waiting:
            return [], [call], leases
        return waiting, task.plan(keep) if keep else [], leases

    def _stop_if_late(self, lane: _Lane, task: Task, deadline: Deadline) -> None:
        expected = self._runner.expected(task)
        if lane.stopped is None and not deadline.allows(expected):
            lane.stop(
                DeadlineExceededError(
                    f"not started: {deadline.remaining_s():.1f}s left, a {task.name} call "
                    f"takes ~{expected:.1f}s"
                )
            )


def _lanes(jobs: Sequence[Job]) -> list[_Lane]:
    by_task: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_task[job.task].append(job)
    lanes: dict[tuple[str, str, str], _Lane] = defaultdict(_Lane)
    for name, task_jobs in by_task.items():
        task = get_task(name)
        for call in task.plan(task_jobs):
            lanes[task.rate_key(call)].calls.append((task, call))
    return list(lanes.values())


def _is_canary(job: Job, views: Mapping[str, RequestView]) -> bool:
    view = views.get(job.request_id)
    return view is not None and view.is_canary(job.key)


def _waits_for_canary(job: Job, canaries: set[str], views: Mapping[str, RequestView]) -> bool:
    """True for a job its request's canary holds back while the canary is in this batch
    (``canaries``: the requests whose canary is)."""
    view = views.get(job.request_id)
    return (
        view is not None
        and job.request_id in canaries
        and not view.is_canary(job.key)
        and isinstance(view.held_back(job.key), CanaryPendingError)
    )


def _held_back(job: Job, views: Mapping[str, RequestView]) -> JobOutcome | None:
    """The outcome of a job its request does not let start now (None: it may start). A dry
    run is never held back: it changes nothing."""
    view = views.get(job.request_id)
    if view is None or job.dry_run:
        return None
    if view.cancelled:
        return JobOutcome(
            job, Result.CANCELLED, error=NotRunError("cancelled: the request was cancelled")
        )
    reason = view.held_back(job.key)
    if isinstance(reason, NotRunError):
        return JobOutcome(job, Result.NOT_RUN, error=reason)
    if reason is not None:
        return JobOutcome(job, Result.RETRY, error=reason)
    return None


def _hold_back(
    task: Task, call: Call, views: Mapping[str, RequestView]
) -> tuple[list[JobOutcome], list[Call]]:
    """The call's jobs their request holds back now, and the calls for the rest (the call
    itself, or the rest re-planned when some were held back)."""
    held: list[JobOutcome] = []
    keep: list[Job] = []
    for job in call.jobs:
        if (outcome := _held_back(job, views)) is not None:
            held.append(outcome)
        else:
            keep.append(job)
    if not held:
        return [], [call]
    return held, task.plan(keep) if keep else []


def _not_started(stop: FanoutError) -> NotStartedError:
    if isinstance(stop, NotStartedError):
        return stop
    return LaneStoppedError(
        f"not started: an earlier call of its rate key: {stop.reason}", cause=stop
    )
