"""Targets by organisation against the emulator's organisation, through the real handler.

What is measured at the emulator (moto's own record of AssumeRole calls), not at the worker:
an excluded account and an account outside the allow-list are never entered.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fanout.cli import main
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
from fanout.status import Outcome, ledger_for, read_status
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
    # The excluded account and the outsider are members no other test enters (333... is).
    excluded, outsider = sorted(a for a in accounts if a.startswith("22"))[-2:]
    allowed = tuple(a for a in accounts if a not in (excluded, outsider))
    entered_before = {a: len(assumed_role_sessions(a)) for a in (excluded, outsider)}
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
    before = read_status(ledger_for(aws_env.ledger_table or "", region=aws_env.region), request_id)
    assert sorted(q.account for q in before.queued) == sorted([*allowed, outsider])
    assert (before.expected, before.count(Outcome.PENDING), before.finished) == (9, 9, False)

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
    # Measured at the emulator: moto's own record of the AssumeRole calls it served.
    assert {a: len(assumed_role_sessions(a)) for a in (excluded, outsider)} == entered_before
    source = status_source(
        aws_env.ledger_table or "",
        lambda: aws_env.ops_session().client("dynamodb", endpoint_url=aws_env.endpoint_url),
    )
    record = source.requests.requests([request_id])[request_id]
    assert record.expected == 9
    assert (record.counts()["succeeded"], record.counts()["failed"]) == (8, 1)
    after = read_status(source, request_id)
    assert (after.queued, after.count(Outcome.PENDING), after.finished) == ((), 0, True)


def test_fanout_targets_previews_a_selection_with_the_workers_code(
    aws_env: Organisation, tree: OrgTree, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN the Prod OU and its child ProdEU (22 accounts, one suspended)
    WHEN ``fanout targets --ous Prod --include-child-ous --account-tag team=web -o json`` runs
    THEN it lists the active web accounts of both OUs, says which the allow-list admits, and
    reports the suspended account and the untagged ones instead of listing them."""
    code = main(
        [
            "targets",
            "--ous",
            tree.ous["Prod"],
            "--include-child-ous",
            "--account-tag",
            "team=web",
            "-o",
            "json",
        ]
    )
    out, _ = capsys.readouterr()

    assert code == 0
    shown = json.loads(out)
    web = {a for a in tree.in_ou("Prod", "ProdEU") if tree.tags[a]["team"] == "web"}
    assert {t["account"] for t in shown["targets"]} == web - set(tree.suspended)
    allowed = {t["account"] for t in shown["targets"] if t["allowed"] == "yes"}
    assert allowed == web & set(aws_env.account_ids)
    assert shown["inactive"] == {tree.suspended[0]: "SUSPENDED"}
    active = set(tree.in_ou("Prod", "ProdEU")) - set(tree.suspended)
    assert shown["untagged"] == len(active - web)


def test_fanout_publish_sends_a_selection_as_one_message(
    aws_env: Organisation,
    tree: OrgTree,
    sqs: SQSClient,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """GIVEN selection flags and a file of per-account params
    WHEN ``fanout publish`` runs
    THEN one message with that select block is on the queue, parsed by the worker's parser."""
    by_account = tmp_path / "params.json"
    by_account.write_text(json.dumps({"333333333333": {"distribution_id": "EDIST0000001"}}))
    code = main(
        [
            "publish",
            "cloudfront.invalidate",
            "--ous",
            tree.ous["ProdEU"],
            "--account-tag",
            "env=prod",
            "--exclude-accounts",
            "220000000001",
            "--regions",
            "us-east-1",
            "--param",
            "paths=/a",
            "--params-by-account",
            str(by_account),
            "--request-id",
            "publish-select",
        ]
    )
    out, _ = capsys.readouterr()

    assert code == 0, out
    assert "the worker expands it" in out
    [message] = sqs.receive_message(QueueUrl=aws_env.queue_url)["Messages"]
    body = json.loads(message["Body"])
    assert body["select"] == {
        "organizational_units": [tree.ous["ProdEU"]],
        "account_tags": {"env": "prod"},
        "exclude_accounts": ["220000000001"],
        "regions": ["us-east-1"],
        "params_by_account": {"333333333333": {"distribution_id": "EDIST0000001"}},
    }
    assert "targets" not in body
