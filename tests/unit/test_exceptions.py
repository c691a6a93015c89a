"""handler.exceptions.classify_aws_error: the one place AWS errors become permanent/retryable."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

from handler.exceptions import (
    AccessDeniedError,
    BadMessageError,
    FanoutError,
    PermanentError,
    QuotaExceededError,
    RetryableError,
    TaskFailedError,
    ThrottledError,
    TransientError,
    classify_aws_error,
)

OPERATION = "CreateInvalidation"
QUOTA_CODE = "TooManyInvalidationsInProgress"


def client_error(code: str, status: int, message: str = "it went wrong") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, OPERATION)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("Throttling", 400, ThrottledError),
        ("ThrottlingException", 400, ThrottledError),
        ("TooManyRequestsException", 400, ThrottledError),
        ("SomethingElse", 429, ThrottledError),
        ("SomethingElse", 500, TransientError),
        ("SomethingElse", 503, TransientError),
        ("InternalError", 400, TransientError),
        ("ServiceUnavailable", 400, TransientError),
        ("AccessDenied", 400, AccessDeniedError),
        ("AccessDeniedException", 400, AccessDeniedError),
        ("SomethingElse", 403, AccessDeniedError),
        ("NoSuchDistribution", 404, TaskFailedError),
        ("ValidationException", 400, TaskFailedError),
        ("InvalidArgument", 400, TaskFailedError),
    ],
)
def test_client_errors_map_to_their_error_family(
    code: str, status: int, expected: type[FanoutError]
) -> None:
    """GIVEN a ClientError with an error code and HTTP status
    WHEN it is classified
    THEN it becomes exactly the expected FanoutError class."""
    assert type(classify_aws_error(client_error(code, status))) is expected


def test_a_plugin_quota_code_is_quota_exceeded_and_retryable() -> None:
    """GIVEN a 400 ClientError whose code the plugin declares as a quota code
    WHEN it is classified with those quota codes
    THEN it is QuotaExceededError, a retryable error."""
    error = classify_aws_error(client_error(QUOTA_CODE, 400), quota_codes=frozenset({QUOTA_CODE}))

    assert type(error) is QuotaExceededError
    assert isinstance(error, RetryableError)


def test_a_quota_code_of_another_plugin_is_a_permanent_failure() -> None:
    """GIVEN the same ClientError classified without that quota code
    WHEN it is classified
    THEN it is a TaskFailedError (quota codes are per plugin)."""
    assert type(classify_aws_error(client_error(QUOTA_CODE, 400))) is TaskFailedError


@pytest.mark.parametrize(
    ("expected", "family"),
    [
        (ThrottledError, RetryableError),
        (TransientError, RetryableError),
        (QuotaExceededError, RetryableError),
        (AccessDeniedError, PermanentError),
        (TaskFailedError, PermanentError),
    ],
)
def test_each_error_class_is_on_the_intended_side_of_the_split(
    expected: type[FanoutError], family: type[FanoutError]
) -> None:
    """GIVEN an error class classify_aws_error produces
    WHEN its place in the hierarchy is checked
    THEN it is retryable or permanent as the design says, never both."""
    assert issubclass(expected, family)
    assert not issubclass(expected, RetryableError if family is PermanentError else PermanentError)


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(
            EndpointConnectionError(endpoint_url="https://cloudfront.amazonaws.com"),
            id="endpoint-connection",
        ),
        pytest.param(
            ReadTimeoutError(endpoint_url="https://cloudfront.amazonaws.com"), id="read-timeout"
        ),
    ],
)
def test_connection_failures_are_transient(exc: Exception) -> None:
    """GIVEN a botocore connection error or read timeout
    WHEN it is classified
    THEN it is a TransientError whose reason says it was a connection error."""
    error = classify_aws_error(exc)

    assert type(error) is TransientError
    assert "connection error" in error.reason


def test_client_side_parameter_validation_is_a_permanent_failure() -> None:
    """GIVEN botocore's ParamValidationError (the request never left the client)
    WHEN it is classified
    THEN it is a TaskFailedError naming ParamValidationError (retrying sends the same request)."""
    error = classify_aws_error(ParamValidationError(report="Missing required parameter Paths"))

    assert type(error) is TaskFailedError
    assert "ParamValidationError" in error.reason


def test_reason_is_one_line_naming_operation_code_and_message() -> None:
    """GIVEN a ClientError whose message spans several lines
    WHEN it is classified
    THEN the reason is one line holding the operation, the code and the message words."""
    error = classify_aws_error(client_error("NoSuchDistribution", 404, "line one\nline two\r\n"))

    assert "\n" not in error.reason
    assert "\r" not in error.reason
    assert error.reason == f"{OPERATION}: NoSuchDistribution: line one line two"


def test_a_fanout_error_passes_through_unchanged() -> None:
    """GIVEN an error that is already a FanoutError
    WHEN it is classified
    THEN the very same object comes back."""
    original = BadMessageError("already classified")

    assert classify_aws_error(original) is original
