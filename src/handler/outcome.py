"""How a job ended in one delivery: succeeded, retry (redeliver) or failed (dead-letter)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from handler.exceptions import FanoutError
from tasks.base import Job, TaskResult

__all__ = ["JobOutcome", "JobState"]


class JobState(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobOutcome:
    job: Job
    state: JobState
    result: TaskResult | None = None
    error: FanoutError | None = None
    # The ledger already held this ending (a duplicate delivery): report it, do not act on it.
    replayed: bool = False
