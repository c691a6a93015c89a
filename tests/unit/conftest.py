"""Shared fixtures for the unit tier: fake AWS credentials, moto in-process, call recording."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto import mock_aws

from handler import app
from tests.unit.fakes import TARGET_ACCOUNTS, ApiCalls, FakeLambdaContext

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def _isolated_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another's environment, settings or cached sessions."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "DEAD_LETTER_QUEUE_URL", "LEDGER_TABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "fanout")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "FanoutTest")
    app.reset()
    yield
    app.reset()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, aws: None) -> dict[str, str]:
    """The function's configuration, with a dead-letter queue in the ops account."""
    dlq_url = boto3.client("sqs").create_queue(QueueName="fanout-dlq")["QueueUrl"]
    env = {
        "TARGET_ROLE_NAME": "OpsFanoutTargetRole",
        "ALLOWED_ACCOUNT_IDS": ",".join(TARGET_ACCOUNTS),
        "DEAD_LETTER_QUEUE_URL": dlq_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app.reset()
    return env


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> ApiCalls:
    """Records every AWS call (service, operation, parameters) made through botocore."""
    recorded = ApiCalls()
    original = BaseClient._make_api_call

    def recording(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        recorded.calls.append((self.meta.service_model.service_name, operation, params))
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return recorded


@pytest.fixture
def fail_operation(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make an operation fail with an AWS error code, always or for its first ``times`` calls."""

    def install(operation: str, code: str, *, status: int = 400, times: int | None = None) -> None:
        original = BaseClient._make_api_call
        remaining = [times]

        def failing(self: BaseClient, op: str, params: dict[str, Any]) -> Any:
            if op == operation and (remaining[0] is None or remaining[0] > 0):
                if remaining[0] is not None:
                    remaining[0] -= 1
                raise ClientError(
                    {
                        "Error": {"Code": code, "Message": f"injected {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status},
                    },
                    op,
                )
            return original(self, op, params)

        monkeypatch.setattr(BaseClient, "_make_api_call", failing)

    return install


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff waits return at once (the waits themselves are not what is tested)."""
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda _seconds: None)
