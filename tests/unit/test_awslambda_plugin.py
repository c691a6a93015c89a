"""tasks.awslambda: the exact Invoke request, its result, function errors, and the target guard."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto.core.config import default_user_config

from handler.app import lambda_handler
from handler.envelope import validate
from handler.exceptions import (
    BadMessageError,
    InvalidParamsError,
    TaskFailedError,
    ThrottledError,
    classify_aws_error,
)
from handler.policy import session_policy
from tasks.awslambda import PREVIEW_BYTES, parse_function
from tasks.base import Call, TaskResult
from tasks.registry import get_task
from tests.unit.fakes import (
    TARGET_ACCOUNTS,
    ApiCalls,
    FakeLambdaContext,
    dead_letters,
    one_job_call,
    sqs_event,
    sqs_record,
    v1_body,
)

ACCOUNT = "111111111111"
OTHER = "222222222222"
REGION = "us-east-1"
REQUEST_ID = "c0ffee00-1111-2222-3333-444455556666"
TASK = get_task("lambda.invoke")


class FakeContext:
    """A TaskContext whose `client()` returns the stubbed client and records each request."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.account = ACCOUNT
        self.region = REGION
        self.requested: list[str] = []

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        self.requested.append(service)
        return self._client


def make_call(params: Mapping[str, Any], *, account: str = ACCOUNT, region: str = REGION) -> Call:
    return one_job_call(
        "lambda.invoke", params, account=account, region=region, request_id="warmup-1"
    )


def invoke_response(payload: bytes = b"{}", *, status: int = 200, **extra: Any) -> dict[str, Any]:
    return {
        "StatusCode": status,
        "Payload": StreamingBody(io.BytesIO(payload), len(payload)),
        "ResponseMetadata": {"RequestId": REQUEST_ID},
        **extra,
    }


@pytest.fixture
def lam() -> Iterator[tuple[Any, Stubber]]:
    client = botocore.session.get_session().create_client(
        "lambda", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def run(client: Any, params: Mapping[str, Any], **where: str) -> TaskResult:
    return TASK.run(FakeContext(client), make_call(params, **where))


# --- the request -------------------------------------------------------------------------------


def test_defaults_invoke_request_response_with_an_empty_object(lam: tuple[Any, Stubber]) -> None:
    """GIVEN params with only a function name
    WHEN the plugin runs the call
    THEN Invoke is sent synchronously (RequestResponse) with payload {} and no qualifier."""
    client, stubber = lam
    stubber.add_response(
        "invoke",
        invoke_response(),
        expected_params={
            "FunctionName": "cache-warmer",
            "InvocationType": "RequestResponse",
            "Payload": b"{}",
        },
    )

    run(client, {"function_name": "cache-warmer"})


def test_payload_event_type_and_qualifier_are_sent_as_given(lam: tuple[Any, Stubber]) -> None:
    """GIVEN a JSON payload, invocation_type Event and a qualifier
    WHEN the plugin runs the call
    THEN Invoke carries the payload as compact JSON, InvocationType Event and the Qualifier."""
    client, stubber = lam
    stubber.add_response(
        "invoke",
        invoke_response(b"", status=202),
        expected_params={
            "FunctionName": "cache-warmer",
            "InvocationType": "Event",
            "Payload": b'{"paths":["/a"],"n":1}',
            "Qualifier": "live",
        },
    )

    result = run(
        client,
        {
            "function_name": "cache-warmer",
            "payload": {"paths": ["/a"], "n": 1},
            "invocation_type": "Event",
            "qualifier": "live",
        },
    )

    assert result.detail["status_code"] == 202
    assert "payload_preview" not in result.detail


def test_an_arn_of_the_target_account_and_region_is_invoked_as_given(
    lam: tuple[Any, Stubber],
) -> None:
    """GIVEN function_name as a full ARN in the target account and region
    WHEN the plugin runs the call
    THEN Invoke names the function by that ARN."""
    client, stubber = lam
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:cache-warmer:live"
    stubber.add_response(
        "invoke",
        invoke_response(),
        expected_params={
            "FunctionName": arn,
            "InvocationType": "RequestResponse",
            "Payload": b"{}",
        },
    )

    run(client, {"function_name": arn})


# --- the result --------------------------------------------------------------------------------


def test_result_is_the_request_id_with_status_version_and_payload_preview(
    lam: tuple[Any, Stubber],
) -> None:
    """GIVEN Lambda answers 200 with version 7 and a small payload
    WHEN the plugin runs a RequestResponse call
    THEN the resource id is Lambda's request id and the detail holds status, version and the
    whole payload as preview."""
    client, stubber = lam
    stubber.add_response("invoke", invoke_response(b'{"warmed":3}', ExecutedVersion="7"))

    result = run(client, {"function_name": "cache-warmer"})

    assert result.resource_id == REQUEST_ID
    assert result.detail["status_code"] == 200
    assert result.detail["executed_version"] == "7"
    assert result.detail["payload_preview"] == '{"warmed":3}'
    assert result.detail["payload_truncated"] is False


def test_a_large_payload_is_previewed_in_at_most_one_kilobyte(lam: tuple[Any, Stubber]) -> None:
    """GIVEN a 5,000-byte answer of multi-byte characters
    WHEN the plugin runs the call
    THEN the preview is at most 1 KB of valid text and says it was truncated."""
    client, stubber = lam
    stubber.add_response("invoke", invoke_response(json.dumps("é" * 2500).encode()))

    result = run(client, {"function_name": "cache-warmer"})

    assert len(result.detail["payload_preview"].encode()) <= PREVIEW_BYTES
    assert result.detail["payload_preview"].startswith('"\\u00e9')
    assert result.detail["payload_truncated"] is True


def test_a_function_error_fails_the_job_with_its_error_message_on_one_line(
    lam: tuple[Any, Stubber],
) -> None:
    """GIVEN the function raised (FunctionError Unhandled) with a multi-line errorMessage
    WHEN the plugin runs the call
    THEN TaskFailedError (permanent) names the function, the error type and the message, on
    one line."""
    client, stubber = lam
    error = {"errorType": "KeyError", "errorMessage": "'paths'\nmissing key", "stackTrace": []}
    stubber.add_response(
        "invoke", invoke_response(json.dumps(error).encode(), FunctionError="Unhandled")
    )

    with pytest.raises(TaskFailedError) as caught:
        run(client, {"function_name": "cache-warmer"})

    assert "\n" not in caught.value.reason
    assert "cache-warmer" in caught.value.reason
    assert "KeyError: 'paths' missing key" in caught.value.reason


def test_a_function_error_without_json_keeps_the_raw_text(lam: tuple[Any, Stubber]) -> None:
    """GIVEN FunctionError Handled with a payload that is not JSON
    WHEN the plugin runs the call
    THEN the failure reason carries that text, cut to a bounded length."""
    client, stubber = lam
    stubber.add_response(
        "invoke", invoke_response(b"Task timed out " + b"x" * 1000, FunctionError="Handled")
    )

    with pytest.raises(TaskFailedError) as caught:
        run(client, {"function_name": "cache-warmer"})

    assert "Task timed out" in caught.value.reason
    assert len(caught.value.reason) < 500


# --- the target guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "function_name",
    [
        f"arn:aws:lambda:{REGION}:{OTHER}:function:cache-warmer",
        f"{OTHER}:function:cache-warmer",
    ],
    ids=["full-arn", "partial-arn"],
)
def test_an_arn_of_another_account_is_refused_before_any_call(function_name: str) -> None:
    """GIVEN function_name naming another account than the target's
    WHEN the plugin runs the call
    THEN InvalidParamsError names both accounts, and no client is even requested."""
    ctx = FakeContext(client=None)

    with pytest.raises(InvalidParamsError) as caught:
        TASK.run(ctx, make_call({"function_name": function_name}))

    assert OTHER in caught.value.reason
    assert ACCOUNT in caught.value.reason
    assert ctx.requested == []


def test_an_arn_of_another_region_is_refused_before_any_call() -> None:
    """GIVEN a function ARN in eu-west-1 for a target in us-east-1
    WHEN the plugin runs the call
    THEN InvalidParamsError asks to set the target's region, and no client is requested."""
    ctx = FakeContext(client=None)

    with pytest.raises(InvalidParamsError, match="eu-west-1"):
        TASK.run(
            ctx, make_call({"function_name": f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:f"})
        )

    assert ctx.requested == []


# --- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("f", ("f", None, None, None)),
        ("f:live", ("f", "live", None, None)),
        ("f:$LATEST", ("f", "$LATEST", None, None)),
        (f"{ACCOUNT}:function:f", ("f", None, ACCOUNT, None)),
        (f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:f:3", ("f", "3", ACCOUNT, "eu-west-1")),
        (f"arn:aws-cn:lambda:cn-north-1:{ACCOUNT}:function:f", ("f", None, ACCOUNT, "cn-north-1")),
    ],
)
def test_function_names_partial_arns_and_arns_are_parsed(
    value: str, parts: tuple[str | None, ...]
) -> None:
    """GIVEN each form Lambda accepts for FunctionName
    WHEN it is parsed
    THEN name, qualifier, account and region come out."""
    ref = parse_function(value)

    assert (ref.name, ref.qualifier, ref.account, ref.region) == parts


@pytest.mark.parametrize(
    "value",
    [
        "",
        "f;rm",
        "arn:aws:s3:::bucket",
        f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:x",
        "f:live:extra",
        "x" * 65,
    ],
)
def test_other_strings_are_refused_by_the_schema(value: str) -> None:
    """GIVEN a function_name that is not a name, partial ARN or function ARN
    WHEN the params are validated
    THEN the schema refuses it."""
    with pytest.raises(BadMessageError):
        validate(TASK.params_schema, {"function_name": value}, what="params")


def test_a_qualifier_contradicting_the_one_in_the_name_is_refused() -> None:
    """GIVEN function_name f:live and qualifier blue
    WHEN the plugin checks the params
    THEN InvalidParamsError names both qualifiers."""
    with pytest.raises(InvalidParamsError, match=r"'live'.*'blue'"):
        TASK.check({"function_name": "f:live", "qualifier": "blue"}, account=ACCOUNT, region=REGION)


def test_any_json_payload_and_only_the_two_invocation_types_are_accepted() -> None:
    """GIVEN payloads of every JSON type, and invocation types
    WHEN the params are validated
    THEN every payload passes, and DryRun (not a job) is refused."""
    for payload in ({}, [], "s", 1, 1.5, True, None, {"a": [{"b": None}]}):
        validate(TASK.params_schema, {"function_name": "f", "payload": payload}, what="params")

    with pytest.raises(BadMessageError):
        validate(
            TASK.params_schema, {"function_name": "f", "invocation_type": "DryRun"}, what="params"
        )


# --- permissions -------------------------------------------------------------------------------


def test_session_policy_allows_the_function_and_its_qualifiers_only() -> None:
    """GIVEN a call for one function (given as an ARN with an alias)
    WHEN its resource-scoped session policy is built
    THEN it allows InvokeFunction on that function and its versions/aliases in the account."""
    params = {"function_name": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:cache-warmer:live"}

    policy = json.loads(session_policy(TASK, "aws", ACCOUNT, params=params))

    [statement] = policy["Statement"]
    assert statement["Action"] == ["lambda:InvokeFunction"]
    assert statement["Resource"] == [
        f"arn:aws:lambda:*:{ACCOUNT}:function:cache-warmer",
        f"arn:aws:lambda:*:{ACCOUNT}:function:cache-warmer:*",
    ]


def test_invoke_is_not_idempotent_and_lambda_throttling_is_retryable() -> None:
    """GIVEN the plugin's declaration and Lambda's throttling error
    WHEN they are read and classified
    THEN the plugin is not idempotent (no 5xx retry in-function) and TooManyRequestsException
    is a ThrottledError (retried with backoff)."""
    error = ClientError(
        {
            "Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 429},
        },
        "Invoke",
    )

    assert TASK.idempotent is False
    assert isinstance(classify_aws_error(error), ThrottledError)


# --- through the handler (moto in-process, Lambda without Docker) -----------------------------


@pytest.fixture
def lambda_without_docker(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """moto's Docker-less Lambda; returns a helper queueing a canned answer in an account."""
    from moto.awslambda_simple.models import lambda_simple_backends  # noqa: PLC0415

    monkeypatch.setitem(default_user_config, "lambda", {"use_docker": False})

    def answer(account: str, result: str) -> None:
        lambda_simple_backends[account][REGION].lambda_simple_results_queue.append(result)

    return answer


def _queued(account: str) -> list[str]:
    from moto.awslambda_simple.models import lambda_simple_backends  # noqa: PLC0415

    return list(lambda_simple_backends[account][REGION].lambda_simple_results_queue)


@pytest.mark.usefixtures("worker_env")
def test_the_handler_invokes_in_each_target_account_through_its_role(
    context: FakeLambdaContext,
    api_calls: ApiCalls,
    lambda_without_docker: Callable[[str, str], None],
) -> None:
    """GIVEN a lambda.invoke message for two accounts, each with a canned answer waiting
    WHEN the handler processes it
    THEN each account's answer is consumed (the invoke ran in that account), with the payload
    sent, and nothing is retried or dead-lettered."""
    accounts = TARGET_ACCOUNTS[:2]
    for account in accounts:
        lambda_without_docker(account, json.dumps({"from": account}))
    body = v1_body(
        "lambda.invoke",
        [{"account": a} for a in accounts],
        params={"function_name": "cache-warmer", "payload": {"paths": ["/"]}},
    )

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert response["batchItemFailures"] == []
    assert dead_letters() == []
    assert [_queued(a) for a in accounts] == [[], []]
    assert [p["Payload"] for p in api_calls.of("Invoke")] == [b'{"paths":["/"]}'] * 2
    assert {
        json.loads(p["Policy"])["Statement"][0]["Action"][0] for p in api_calls.of("AssumeRole")
    } == {"lambda:InvokeFunction"}


@pytest.mark.usefixtures("worker_env", "lambda_without_docker")
def test_the_handler_dead_letters_an_arn_of_another_account_without_invoking(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a lambda.invoke target whose function ARN names another (allowed) account
    WHEN the handler processes it
    THEN the target is dead-lettered with InvalidParamsError and Invoke is never called."""
    account, other = TARGET_ACCOUNTS[:2]
    body = v1_body(
        "lambda.invoke",
        [{"account": account, "params": {"function_name": f"{other}:function:cache-warmer"}}],
    )

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert response["batchItemFailures"] == []
    [letter] = dead_letters()
    assert letter["fanout.error_class"] == "InvalidParamsError"
    assert other in letter["fanout.reason"]
    assert api_calls.count("Invoke") == 0


@pytest.mark.usefixtures("worker_env", "no_sleep")
def test_the_handler_retries_lambda_throttling_and_invokes_once(
    context: FakeLambdaContext,
    api_calls: ApiCalls,
    fail_operation: Callable[..., None],
    lambda_without_docker: Callable[[str, str], None],
) -> None:
    """GIVEN Invoke answers TooManyRequestsException (429) twice, then succeeds
    WHEN the handler processes a lambda.invoke message
    THEN the job succeeds after backoff, with exactly one Invoke reaching Lambda."""
    account = TARGET_ACCOUNTS[0]
    lambda_without_docker(account, "ok")
    fail_operation("Invoke", "TooManyRequestsException", status=429, times=2)
    body = v1_body("lambda.invoke", [{"account": account}], params={"function_name": "f"})

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert response["batchItemFailures"] == []
    assert dead_letters() == []
    assert _queued(account) == []
    assert api_calls.count("Invoke") == 1  # the throttled attempts never reached Lambda


@pytest.mark.usefixtures("worker_env")
def test_the_handler_does_not_repeat_an_invoke_whose_outcome_is_unknown(
    context: FakeLambdaContext,
    fail_operation: Callable[..., None],
    lambda_without_docker: Callable[[str, str], None],
) -> None:
    """GIVEN Invoke fails once with a 500 (the function may or may not have run)
    WHEN the handler processes a lambda.invoke message
    THEN it is not retried in-function (the next Invoke would have consumed the canned answer)
    and the message goes back to the queue for a later try, not to the DLQ."""
    account = TARGET_ACCOUNTS[0]
    lambda_without_docker(account, "ok")
    fail_operation("Invoke", "ServiceException", status=500, times=1)
    record = sqs_record(
        v1_body("lambda.invoke", [{"account": account}], params={"function_name": "f"})
    )

    response = lambda_handler(sqs_event(record), context)

    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [record["messageId"]]
    assert _queued(account) == ["ok"]
    assert dead_letters() == []
