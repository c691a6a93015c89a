"""The root of fanout's error tree, and the errors a plugin raises itself.

Every error the worker raises on purpose is a :class:`FanoutError`, either permanent (the job is
dead-lettered with the reason) or retryable (the job is tried again later). Plugins see only this
module; the worker extends the tree in ``handler.exceptions``, where AWS errors are classified.
"""

from __future__ import annotations

__all__ = [
    "FanoutError",
    "InvalidParamsError",
    "PermanentError",
    "RetryableError",
    "TaskFailedError",
    "TransientError",
    "UnknownTaskError",
]


class FanoutError(Exception):
    """Root of every error the worker raises on purpose."""

    def __init__(self, reason: str) -> None:
        # Reasons travel to logs and dead-letter attributes: keep them on one line.
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)

    @property
    def error_class(self) -> str:
        return type(self).__name__

    def with_reason(self, reason: str) -> FanoutError:
        """The same kind of error (what operators filter dead letters by), another reason."""
        return type(self)(reason)


class PermanentError(FanoutError):
    """Retrying cannot help: the job or message is dead-lettered with this reason."""


class RetryableError(FanoutError):
    """The job may succeed later: it is tried again (re-sent with a delay, or redelivered)."""


class InvalidParamsError(PermanentError):
    """A target's parameters do not satisfy the task's parameter schema or limits."""


class UnknownTaskError(PermanentError):
    """The message names a task no plugin registers."""


class TaskFailedError(PermanentError):
    """The AWS API rejected the request itself (validation, missing resource, ...)."""


class TransientError(RetryableError):
    """5xx, timeouts, dropped connections: the outcome of the call may be unknown."""
