"""tasks.ssm: the exact SendCommand request built from a call, its result, and recovery."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from tasks.base import Call, Job, TaskResult
from tasks.errors import InvalidParamsError, TransientError
from tasks.registry import get_task
from tasks.ssm import MAX_RECOVERY_PAGES, job_token
from tests.unit.fakes import one_job_call

ACCOUNT = "111111111111"
INSTANCES = ["i-0123456789abcdef0", "i-0fedcba9876543210"]
COMMAND_ID = "9b8c1e5a-1111-2222-3333-444455556666"
JOB_KEY = "0f6a3c528d1e4a7b9c412b7e5d9a1f01"  # 32 hex characters, like envelope.job_key


class FakeContext:
    """A TaskContext whose `client()` returns the stubbed client."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.account = ACCOUNT
        self.region = "us-east-1"
        self.requested: list[str] = []

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        self.requested.append(service)
        return self._client


def make_call(params: Mapping[str, Any], *, request_id: str = "uptime-check-1") -> Call:
    return one_job_call(
        "ssm.send_command", params, account=ACCOUNT, request_id=request_id, key=JOB_KEY
    )


@pytest.fixture
def ssm() -> Iterator[tuple[Any, Stubber]]:
    client = botocore.session.get_session().create_client(
        "ssm",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def command_response(command_id: str = COMMAND_ID) -> dict[str, Any]:
    return {"Command": {"CommandId": command_id, "Status": "Pending"}}


def run(client: Any, call: Call) -> TaskResult:
    return get_task("ssm.send_command").run(FakeContext(client), call)


def test_instance_ids_are_sent_as_instance_ids_with_parameters_timeout_and_comment(
    ssm: tuple[Any, Stubber],
) -> None:
    """GIVEN params with instance_ids, document parameters, a timeout and a comment
    WHEN the plugin runs the call
    THEN SendCommand is sent with exactly InstanceIds, Parameters, TimeoutSeconds and Comment
    (and no Targets)."""
    client, stubber = ssm
    call = make_call(
        {
            "document_name": "AWS-RunShellScript",
            "instance_ids": INSTANCES,
            "parameters": {"commands": ["uptime"]},
            "timeout_seconds": 60,
            "comment": "uptime check",
        }
    )
    stubber.add_response(
        "send_command",
        command_response(),
        expected_params={
            "DocumentName": "AWS-RunShellScript",
            "InstanceIds": INSTANCES,
            "Parameters": {"commands": ["uptime"]},
            "TimeoutSeconds": 60,
            "Comment": f"{job_token(call)} uptime check",
        },
    )

    run(client, call)


def test_tag_targets_are_sent_as_targets_with_key_and_values(ssm: tuple[Any, Stubber]) -> None:
    """GIVEN params with tag targets instead of instance ids
    WHEN the plugin runs the call
    THEN SendCommand carries Targets [{Key, Values}] and no InstanceIds."""
    client, stubber = ssm
    call = make_call(
        {
            "document_name": "AWS-RunShellScript",
            "targets": [
                {"key": "tag:Role", "values": ["dns"]},
                {"key": "tag:Env", "values": ["prod", "dr"]},
            ],
            "comment": "refresh",
        }
    )
    stubber.add_response(
        "send_command",
        command_response(),
        expected_params={
            "DocumentName": "AWS-RunShellScript",
            "Targets": [
                {"Key": "tag:Role", "Values": ["dns"]},
                {"Key": "tag:Env", "Values": ["prod", "dr"]},
            ],
            "Comment": ANY,
        },
    )

    run(client, call)


def test_optional_document_version_and_rate_controls_are_passed_through(
    ssm: tuple[Any, Stubber],
) -> None:
    """GIVEN params with document_version, max_concurrency and max_errors
    WHEN the plugin runs the call
    THEN SendCommand carries DocumentVersion, MaxConcurrency and MaxErrors unchanged."""
    client, stubber = ssm
    stubber.add_response(
        "send_command",
        command_response(),
        expected_params={
            "DocumentName": "AWS-RunShellScript",
            "DocumentVersion": "$LATEST",
            "InstanceIds": INSTANCES[:1],
            "MaxConcurrency": "10%",
            "MaxErrors": "1",
            "Comment": ANY,
        },
    )

    run(
        client,
        make_call(
            {
                "document_name": "AWS-RunShellScript",
                "document_version": "$LATEST",
                "instance_ids": INSTANCES[:1],
                "max_concurrency": "10%",
                "max_errors": "1",
                "comment": "c",
            }
        ),
    )


def _sent_comment(client: Any, stubber: Stubber, call: Call) -> str:
    sent: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.ssm.SendCommand",
        lambda params, **_: sent.append(copy.deepcopy(params)),
    )
    stubber.add_response("send_command", command_response())
    run(client, call)
    (request,) = sent
    comment: str = request["Comment"]
    return comment


def test_default_comment_names_the_request_id(ssm: tuple[Any, Stubber]) -> None:
    """GIVEN params without a comment, for request deploy-2025-01-01-web
    WHEN the plugin runs the call
    THEN the Comment sent names the request id (traceable in the target account)."""
    client, stubber = ssm
    call = make_call(
        {"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES},
        request_id="deploy-2025-01-01-web",
    )

    comment = _sent_comment(client, stubber, call)

    assert "deploy-2025-01-01-web" in comment


def test_default_comment_fits_ssm_limit_for_the_longest_request_id(
    ssm: tuple[Any, Stubber],
) -> None:
    """GIVEN a request id of the maximum 128 characters and no comment
    WHEN the plugin runs the call
    THEN the Comment sent is at most 100 characters and starts with the request id's head."""
    client, stubber = ssm
    request_id = "r" + "x" * 127
    call = make_call(
        {"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES},
        request_id=request_id,
    )

    comment = _sent_comment(client, stubber, call)

    assert len(comment) <= 100
    assert "rxxxxxxxx" in comment


def test_a_maximal_comment_still_starts_with_the_job_token(ssm: tuple[Any, Stubber]) -> None:
    """GIVEN a caller's comment of the maximum 100 characters
    WHEN the plugin runs the call
    THEN the Comment sent is at most 100 characters and starts with the job's token
    (recovery finds the command by that token)."""
    client, stubber = ssm
    call = make_call(
        {"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES, "comment": "c" * 100}
    )

    comment = _sent_comment(client, stubber, call)

    assert len(comment) <= 100
    assert comment.startswith(job_token(call))


def test_job_token_is_stable_per_job_and_differs_between_jobs() -> None:
    """GIVEN two calls of the same job and one of another job
    WHEN their job tokens are computed
    THEN the same job gets the same token and the other job a different one."""
    params = {"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES}
    same = make_call(params)
    other_job = Job(**{**_job_fields(same), "key": "1" + JOB_KEY[1:]})
    other = Call(
        task=same.task,
        account=same.account,
        region=same.region,
        params=params,
        jobs=(other_job,),
    )

    assert job_token(same) == job_token(make_call(params))
    assert job_token(same) != job_token(other)


def _job_fields(call: Call) -> dict[str, Any]:
    job = call.jobs[0]
    return {name: getattr(job, name) for name in Job.__dataclass_fields__}


def test_result_resource_id_is_the_command_id(ssm: tuple[Any, Stubber]) -> None:
    """GIVEN SSM answers SendCommand with command id COMMAND_ID
    WHEN the plugin runs the call
    THEN the result's resource_id is that command id, from the target account's ssm client."""
    client, stubber = ssm
    stubber.add_response("send_command", command_response(COMMAND_ID))
    ctx = FakeContext(client)

    result = get_task("ssm.send_command").run(
        ctx, make_call({"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES})
    )

    assert result.resource_id == COMMAND_ID
    assert ctx.requested == ["ssm"]


def test_send_command_is_not_declared_idempotent() -> None:
    """GIVEN the ssm.send_command plugin (SendCommand has no client token)
    WHEN its declaration is read
    THEN it is not idempotent, so 5xx/timeouts are never retried in-function."""
    assert get_task("ssm.send_command").idempotent is False


# --- find_previous: recovering a command whose result was never recorded --------------------


def command_id(n: int) -> str:
    return f"{n:08d}-1111-2222-3333-444455556666"


def list_response(*comments: str, next_token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "Commands": [
            {"CommandId": command_id(n), "Comment": comment, "Status": "Success"}
            for n, comment in enumerate(comments)
        ]
    }
    if next_token:
        page["NextToken"] = next_token
    return page


SINCE = datetime(2026, 11, 30, 21, 5, 9, tzinfo=UTC)
FIRST_PAGE = {"Filters": [{"key": "InvokedAfter", "value": "2026-11-30T21:05:09Z"}]}


def test_find_previous_returns_the_command_carrying_the_job_token(
    ssm: tuple[Any, Stubber],
) -> None:
    """GIVEN recent commands in the account, one of them commented with this job's token
    WHEN the plugin looks for a previous attempt
    THEN it returns that command's id and sends no command."""
    client, stubber = ssm
    call = make_call({"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES})
    stubber.add_response(
        "list_commands",
        list_response("someone else", f"{job_token(call)} fanout request uptime-check-1"),
        expected_params=FIRST_PAGE,
    )

    previous = get_task("ssm.send_command").find_previous(FakeContext(client), call, since=SINCE)

    assert previous is not None
    assert previous.resource_id == command_id(1)


def test_find_previous_follows_next_token_to_later_pages(ssm: tuple[Any, Stubber]) -> None:
    """GIVEN the job's command is on the second page of ListCommands
    WHEN the plugin looks for a previous attempt
    THEN it asks for the next page with the NextToken and finds the command there."""
    client, stubber = ssm
    call = make_call({"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES})
    stubber.add_response(
        "list_commands", list_response("other", next_token="page-2"), expected_params=FIRST_PAGE
    )
    stubber.add_response(
        "list_commands",
        list_response(f"{job_token(call)} x"),
        expected_params={**FIRST_PAGE, "NextToken": "page-2"},
    )

    previous = get_task("ssm.send_command").find_previous(FakeContext(client), call, since=SINCE)

    assert previous is not None
    assert previous.resource_id == command_id(0)


def test_find_previous_returns_none_when_no_command_starts_with_the_token(
    ssm: tuple[Any, Stubber],
) -> None:
    """GIVEN recent commands none of which starts with this job's token (one only mentions it)
    WHEN the plugin looks for a previous attempt
    THEN it returns None, so the command is sent."""
    client, stubber = ssm
    call = make_call({"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES})
    stubber.add_response(
        "list_commands",
        list_response("unrelated", f"copy of {job_token(call)}"),
        expected_params=FIRST_PAGE,
    )

    assert (
        get_task("ssm.send_command").find_previous(FakeContext(client), call, since=SINCE) is None
    )


def test_find_previous_never_answers_none_from_an_unfinished_search(
    ssm: tuple[Any, Stubber],
) -> None:
    """GIVEN more pages of commands since the job's first claim than the search reads
    WHEN the plugin looks for a previous attempt
    THEN it raises a retryable error instead of answering "not found" (which would send the
    command a second time if it is on a later page)."""
    client, stubber = ssm
    call = make_call({"document_name": "AWS-RunShellScript", "instance_ids": INSTANCES})
    stubber.add_response("list_commands", list_response("other", next_token="p1"))
    for n in range(2, MAX_RECOVERY_PAGES + 1):
        stubber.add_response("list_commands", list_response("other", next_token=f"p{n}"))

    with pytest.raises(TransientError, match="not found yet"):
        get_task("ssm.send_command").find_previous(FakeContext(client), call, since=SINCE)


def test_a_document_of_another_account_is_refused() -> None:
    """GIVEN an SSM document ARN owned by another account than the target
    WHEN the plugin checks the params
    THEN InvalidParamsError names both accounts (an AWS-owned or the target's own passes).

    Regression (issue 9.10): a document ARN of another account passed validation."""
    task = get_task("ssm.send_command")
    other = "arn:aws:ssm:us-east-1:999999999999:document/Evil"
    own = f"arn:aws:ssm:us-east-1:{ACCOUNT}:document/Mine"
    aws = "arn:aws:ssm:us-east-1::document/AWS-RunShellScript"

    with pytest.raises(InvalidParamsError, match="999999999999"):
        task.check(
            {"document_name": other, "instance_ids": INSTANCES}, account=ACCOUNT, region="us-east-1"
        )
    for name in (own, aws):
        task.check(
            {"document_name": name, "instance_ids": INSTANCES}, account=ACCOUNT, region="us-east-1"
        )
