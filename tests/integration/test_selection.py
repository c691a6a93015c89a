"""Targets by organisation against the emulator's organisation, through the real handler.

What is measured at the emulator (moto's own record of AssumeRole calls), not at the worker:
an excluded account and an account outside the allow-list are never entered.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from fanout.context import LocalLambdaContext
from fanout.emulator import (
    OPS_ACCOUNT,
    Emulator,
    Organisation,
    OrgTree,
    assumed_role_sessions,
    seed_distributions,
    seed_org_tree,
)
from fanout.poller import Handler, Poller, build_event
from handler.api import status_source
from tests.integration.test_end_to_end import invalidated_paths

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration


@pytest.fixture
def tree(emulator: Emulator, org: Organisation) -> OrgTree:
    # After the session's organisation (a unit test's mock_aws may have reset moto's state).
    return seed_org_tree(emulator.endpoint_url)


def visible(sqs: SQSClient, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def deliver(worker: Handler, org: Organisation, message: Any) -> None:
    """One invocation with ``message``, as Lambda's event source would make it."""
    context = LocalLambdaContext.create(
        function_name="fanout",
        region=org.region,
        account=OPS_ACCOUNT,
        timeout_s=60,
        memory_mb=512,
    )
    response = worker(build_event([message], queue_arn=org.queue_arn), context)
    assert response == {"batchItemFailures": []}


def test_an_ou_selection_runs_its_allowed_accounts_once_and_never_enters_the_others(
    aws_env: Organisation,
    tree: OrgTree,
    sqs: SQSClient,
    worker: Handler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GIVEN the ProdEU OU (10 accounts), one of them excluded by the selection and one
    outside the allow-list
    WHEN a selecting message is delivered twice to the handler, then its parts are polled
    THEN the redelivery enqueues nothing; the 8 allowed accounts are invalidated once each; the
    outsider is dead-lettered with its reason; the request counts 9 targets; and the emulator
    served no AssumeRole into the excluded account or the outsider."""
    accounts = tree.in_ou("ProdEU")
    excluded, outsider, allowed = accounts[-1], accounts[-2], accounts[:-2]
    distributions = seed_distributions(aws_env.endpoint_url, allowed)
    monkeypatch.setenv("ALLOWED_ACCOUNT_IDS", ",".join([*aws_env.account_ids, *allowed, excluded]))
    from handler import app  # noqa: PLC0415 - the worker reads the allow-list again

    app.reset()
    request_id = f"select-{uuid.uuid4().hex[:8]}"
    path = f"/select/{request_id}.html"
    params = {a: {"distribution_id": d} for a, d in distributions.items()}
    params[outsider] = {"distribution_id": "EOUTSIDER0001"}
    body = {
        "version": 1,
        "task": "cloudfront.invalidate",
        "request_id": request_id,
        "select": {
            "organizational_units": [tree.ous["ProdEU"]],
            "exclude_accounts": [excluded],
            "params_by_account": params,
        },
        "params": {"paths": [path]},
    }
    sqs.send_message(QueueUrl=aws_env.queue_url, MessageBody=json.dumps(body))
    [selecting] = sqs.receive_message(
        QueueUrl=aws_env.queue_url, MessageSystemAttributeNames=["All"], VisibilityTimeout=60
    )["Messages"]

    deliver(worker, aws_env, selecting)
    parts = visible(sqs, aws_env.queue_url)
    # The same message again, as SQS redelivers it after a lost acknowledgement.
    attributes = {**selecting["Attributes"], "ApproximateReceiveCount": "2"}
    deliver(worker, aws_env, {**selecting, "Attributes": attributes})

    assert parts == 2  # the 8 allowed targets in one part, the outsider in one of its own
    assert visible(sqs, aws_env.queue_url) == parts  # the redelivery enqueued nothing
    sqs.delete_message(QueueUrl=aws_env.queue_url, ReceiptHandle=selecting["ReceiptHandle"])

    stats = Poller(aws_env.queue_url, handler=worker, sqs=sqs).run(
        until_empty=True, time_limit_s=60
    )

    assert (stats.deleted, stats.timed_out) == (2, False)
    for account, distribution in distributions.items():
        assert invalidated_paths(aws_env, account, distribution) == {path}, account
    [letter] = sqs.receive_message(QueueUrl=aws_env.dlq_url, MessageAttributeNames=["All"])[
        "Messages"
    ]
    reason = letter["MessageAttributes"]["fanout.reason"]["StringValue"]
    assert f"account {outsider} is not in ALLOWED_ACCOUNT_IDS" in reason
    assert assumed_role_sessions(outsider) == []
    assert assumed_role_sessions(excluded) == []
    source = status_source(
        aws_env.ledger_table or "",
        lambda: aws_env.ops_session().client("dynamodb", endpoint_url=aws_env.endpoint_url),
    )
    record = source.requests.requests([request_id])[request_id]
    assert record.expected == 9
    assert (record.counts()["succeeded"], record.counts()["failed"]) == (8, 1)
