"""Errors of the worker, split into permanent (dead-letter) and retryable (redeliver).

AWS errors (botocore ``ClientError`` and connection errors) are translated into this hierarchy
in exactly one place, :func:`classify_aws_error`, so every other module reasons in two words:
permanent or retryable.
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
    "NotRunError",
    "PermanentError",
    "QuotaExceededError",
    "RetryableError",
    "TaskFailedError",
    "ThrottledError",
    "TransientError",
    "UnknownTaskError",
    "classify_aws_error",
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


class ConfigurationError(FanoutError):
    """The function's own configuration is invalid (a deployment problem, not a message one)."""


class PermanentError(FanoutError):
    """Retrying cannot help: the job or message is dead-lettered with this reason."""


class BadMessageError(PermanentError):
    """The body is not JSON or does not match the envelope schema."""


class UnknownTaskError(PermanentError):
    """The envelope names a task no plugin registers."""


class InvalidParamsError(PermanentError):
    """A target's parameters do not satisfy the task's parameter schema or limits."""


class AccountNotAllowedError(PermanentError):
    """A target account (or partition) is outside what this worker may touch."""


class AccessDeniedError(PermanentError):
    """The target account refused: AssumeRole denied, or the role lacks the permission."""


class TaskFailedError(PermanentError):
    """The AWS API rejected the request itself (validation, missing resource, ...)."""


class NotRunError(PermanentError):
    """Held back by a blast-radius control (failed canary, ``max_errors`` reached)."""


class RetryableError(FanoutError):
    """The job may succeed later: report it for redelivery."""


class ThrottledError(RetryableError):
    """The API's rate limit was hit."""


class TransientError(RetryableError):
    """5xx, timeouts, dropped connections: the outcome of the call may be unknown."""


class QuotaExceededError(RetryableError):
    """A quota on work in progress (e.g. CloudFront's invalidations in progress) is full."""


class DeadlineExceededError(RetryableError):
    """Not started, or abandoned, because the function would time out first."""


class CanaryPendingError(RetryableError):
    """The message's canary target has not succeeded yet."""


class JobBusyError(RetryableError):
    """Another invocation holds the job's lock (a concurrent duplicate delivery)."""


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
