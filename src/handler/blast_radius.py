"""Blast-radius controls applied while a batch runs: canaries first, and ``max_errors``.

A message with ``options.canary`` has its first target run alone; the others run only after it
succeeded. ``options.max_errors`` stops a request's fan-out once more of its targets failed.
Held-back targets end as permanent failures ("not run: ...") so they are dead-lettered with
their reason and can be redriven on purpose.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence

from handler.exceptions import CanaryPendingError, FanoutError, NotRunError
from handler.outcome import JobOutcome, JobState
from tasks.base import Job

__all__ = ["FailureCount", "pass_canaries"]


class FailureCount:
    """Failed targets per request in this run, for the ``max_errors`` option."""

    def __init__(self) -> None:
        self._failed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            self._failed.update(job.request_id for job in jobs)

    def hold_back(self, jobs: Sequence[Job]) -> tuple[list[JobOutcome], list[Job]]:
        """Split jobs into those held back (their request is over max_errors) and the rest."""
        held: list[JobOutcome] = []
        runnable: list[Job] = []
        with self._lock:
            for job in jobs:
                failed = self._failed[job.request_id]
                if job.max_errors is not None and failed > job.max_errors:
                    error = NotRunError(
                        f"not run: {failed} targets failed, more than max_errors={job.max_errors}"
                    )
                    held.append(JobOutcome(job, JobState.FAILED, error=error))
                else:
                    runnable.append(job)
        return held, runnable


def pass_canaries(gated: Sequence[Job], outcomes: dict[str, JobOutcome]) -> list[Job]:
    """Gated jobs whose canary succeeded; the others are settled here."""
    canaries = {o.job.request_id: o for o in outcomes.values() if o.job.canary}
    ready: list[Job] = []
    for job in gated:
        canary = canaries.get(job.request_id)
        if canary is None or canary.state is JobState.SUCCEEDED:
            ready.append(job)  # no canary in this delivery: it succeeded earlier
        elif canary.state is JobState.FAILED:
            reason = canary.error.reason if canary.error else "unknown"
            error: FanoutError = NotRunError(
                f"not run: canary target {canary.job.account} failed: {reason}"
            )
            outcomes[job.key] = JobOutcome(job, JobState.FAILED, error=error)
        else:
            error = CanaryPendingError(f"waiting for canary target {canary.job.account} to succeed")
            outcomes[job.key] = JobOutcome(job, JobState.RETRY, error=error)
    return ready
