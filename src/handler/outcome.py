"""How a job ended in one delivery (the input of the decision in ``handler.lifecycle``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from handler.exceptions import FanoutError, NotStartedError
from handler.ledger import Claim, JobState
from tasks.base import Job, TaskResult

__all__ = ["JobOutcome", "Result"]


class Result(StrEnum):
    SUCCEEDED = "succeeded"  # ran now, or an earlier delivery's success replayed
    FAILED = "failed"  # a failure of its own: dead-letter it
    NOT_RUN = "not_run"  # held back by a request-wide control: dead-letter it as not run
    RETRY = "retry"  # try again later (``error`` says why, and whether it started)
    ENDED = "ended"  # it had ended before this delivery (failed, not run, cancelled): nothing to do
    CANCELLED = "cancelled"  # its request was cancelled before it started
    DRY_RUN = "dry_run"  # a dry run's verdict is recorded


@dataclass(frozen=True, slots=True)
class JobOutcome:
    job: Job
    result: Result
    task_result: TaskResult | None = None
    error: FanoutError | None = None
    # The ledger already held this ending (a duplicate delivery): report it, do not act on it.
    replayed: bool = False
    # FAILED: this delivery holds the job in FAILING under this claim and writes its letter.
    letter_claim: Claim | None = None
    # ENDED: the final state the ledger holds, and the message that first carried the job.
    ended_as: JobState | None = None
    origin_message_id: str | None = None

    @property
    def started(self) -> bool:
        """A retry that used an attempt (its call was made, or may have been)."""
        return not isinstance(self.error, NotStartedError)
