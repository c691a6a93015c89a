"""Errors of the worker, split into permanent (dead-letter) and retryable (try again).

The tree is rooted in the plugin API (``tasks.errors``: FanoutError, PermanentError,
RetryableError and the errors plugins raise) and extended here. AWS errors (botocore
``ClientError`` and connection errors) are translated into it in exactly one place,
:func:`classify_aws_error`, so every other module reasons in two words: permanent or retryable.
Retryable errors of jobs that were never started (:class:`NotStartedError`) use no attempt.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from tasks.errors import (
    FanoutError,
    InvalidParamsError,
    PermanentError,
    RetryableError,
    TaskFailedError,
    TransientError,
    UnknownTaskError,
)

__all__ = [
    "AccessDeniedError",
    "AccountNotAllowedError",
    "BadMessageError",
    "CanaryPendingError",
    "ConfigurationError",
    "DeadlineExceededError",
    "FanoutError",
    "InvalidParamsError",
    "JobBusyError",
    "LaneStoppedError",
    "NotRunError",
    "NotStartedError",
    "OutcomeUnknownError",
    "PermanentError",
    "QuotaExceededError",
    "RecordedFailure",
    "RetryableError",
    "RolloutWaitError",
    "TaskFailedError",
    "ThrottledError",
    "TransientError",
    "UnknownTaskError",
    "classify_aws_error",
    "own_resource_error",
]


class ConfigurationError(FanoutError):
    """The function's own configuration is invalid (a deployment problem, not a message one)."""


class BadMessageError(PermanentError):
    """The body is not JSON or does not match the envelope schema."""


class AccountNotAllowedError(PermanentError):
    """A target account (or partition) is outside what this worker may touch."""


class AccessDeniedError(PermanentError):
    """The target account refused: AssumeRole denied, or the role lacks the permission."""


class NotRunError(PermanentError):
    """Held back by a request-wide control (failed canary, ``max_errors`` reached, stopped)."""


class OutcomeUnknownError(PermanentError):
    """An earlier attempt may have run, and the plugin can neither repeat nor look it up."""


class RecordedFailure(PermanentError):  # noqa: N818 - a failure read back, under its class
    """A failure read back from the ledger, reported under the class it was recorded with."""

    def __init__(self, reason: str, error_class: str) -> None:
        super().__init__(reason)
        self._recorded_class = error_class

    @property
    def error_class(self) -> str:
        return self._recorded_class

    def with_reason(self, reason: str) -> FanoutError:
        return RecordedFailure(reason, self._recorded_class)


class ThrottledError(RetryableError):
    """The API's rate limit was hit."""


class QuotaExceededError(RetryableError):
    """A quota on work in progress (e.g. CloudFront's invalidations in progress) is full."""


class NotStartedError(RetryableError):
    """Not started in this delivery (no time left, its lane stopped, its canary pending, held
    by another invocation): it uses no attempt, only a wait."""


class DeadlineExceededError(NotStartedError):
    """Not started because the function would time out first."""


class CanaryPendingError(NotStartedError):
    """The request's canary target has not succeeded yet."""


class JobBusyError(NotStartedError):
    """Another invocation holds the job's lock (a concurrent duplicate delivery)."""


class RolloutWaitError(NotStartedError):
    """Its request's rollout control has no slot free (``handler.rollout``): it waits about
    ``retry_after`` seconds, and may wait once per wave of the request (``waves``) on top of
    the usual wait budget."""

    def __init__(self, reason: str, *, retry_after: float = 2.0, waves: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.waves = waves

    def with_reason(self, reason: str) -> FanoutError:
        return RolloutWaitError(reason, retry_after=self.retry_after, waves=self.waves)


class LaneStoppedError(NotStartedError):
    """Not started because an earlier call of the same rate key was throttled or out of time."""

    def __init__(self, reason: str, cause: FanoutError | None = None) -> None:
        super().__init__(reason)
        self.cause = cause


# Error codes AWS uses for rate limiting (botocore's standard retry mode list, plus a few
# service-specific spellings).
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "IDPCommunicationError",
    }
)
_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "RegionDisabledException",
    }
)
_CONNECTION_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


# Errors about the worker's own resources (its queues, its ledger table) that no retry fixes:
# the deployment is wrong, not the message.
_MISCONFIGURED_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "InvalidAddress",
        "ResourceNotFoundException",
        "AccessDenied",
        "AccessDeniedException",
        "KMS.AccessDeniedException",
    }
)


def own_resource_error(exc: BaseException, what: str) -> ConfigurationError | None:
    """A :class:`ConfigurationError` when ``exc`` says the worker's own ``what`` (e.g. "the
    dead-letter queue") does not exist or may not be used; None for anything else."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISCONFIGURED_CODES:
            message = exc.response.get("Error", {}).get("Message", "")
            return ConfigurationError(f"{what}: {code}: {message}")
    return None


def classify_aws_error(  # noqa: PLR0911 - one return per error family reads best
    exc: BaseException,
    *,
    quota_codes: frozenset[str] = frozenset(),
) -> FanoutError:
    """Translate a botocore error into a permanent or retryable :class:`FanoutError`.

    ``quota_codes`` are a plugin's codes meaning "too much work in progress; try later"
    (e.g. CloudFront's ``TooManyInvalidationsInProgress``), which no botocore retry mode retries.
    Use as ``raise classify_aws_error(e) from e``.
    """
    if isinstance(exc, FanoutError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")) or code
        operation = getattr(exc, "operation_name", "call")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = f"{operation}: {code}: {message}"
        if code in _THROTTLING_CODES or status == 429:
            return ThrottledError(reason)
        if code in quota_codes:
            return QuotaExceededError(reason)
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientError(reason)
        if code in _ACCESS_DENIED_CODES or status == 403:
            return AccessDeniedError(reason)
        return TaskFailedError(reason)
    if isinstance(exc, _CONNECTION_ERRORS):
        return TransientError(f"connection error: {exc}")
    if isinstance(exc, BotoCoreError):
        # Parameter validation and similar client-side failures: retrying sends the same request.
        return TaskFailedError(f"{type(exc).__name__}: {exc}")
    return TransientError(f"unexpected {type(exc).__name__}: {exc}")
