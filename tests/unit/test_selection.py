"""Targets by organisation: ``select`` in a body, expanded through Organizations into parts."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from handler import app
from handler.app import lambda_handler
from handler.envelope import parse_message
from handler.exceptions import BadMessageError
from handler.organization import Directory
from handler.requests_dynamodb import DynamoDBRequests
from handler.selection import Selection, select_accounts
from tests.unit.fakes import (
    ApiCalls,
    FakeLambdaContext,
    create_distribution,
    dead_letters,
    failures,
    invalidations,
    sqs_event,
    sqs_record,
)
from tests.unit.test_ledger import create_ledger_table

REGION = "us-east-1"


@dataclass
class Org:
    web: str  # OU
    web_eu: str  # child OU of web
    accounts: dict[str, str]  # name -> id


def make_org() -> Org:
    """web: prod-a, dev-b, closed-c (suspended), excluded-e, outsider-f (prod, not allowed);
    web/web-eu: prod-d."""
    org = boto3.client("organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    web = org.create_organizational_unit(ParentId=root, Name="web")["OrganizationalUnit"]["Id"]
    eu = org.create_organizational_unit(ParentId=web, Name="web-eu")["OrganizationalUnit"]["Id"]
    layout = {
        "prod-a": (web, "prod"),
        "dev-b": (web, "dev"),
        "closed-c": (web, "prod"),
        "prod-d": (eu, "prod"),
        "excluded-e": (web, "prod"),
        "outsider-f": (web, "prod"),
    }
    accounts = {}
    for name, (parent, env) in layout.items():
        account = org.create_account(
            AccountName=name, Email=f"{name}@example.com", Tags=[{"Key": "env", "Value": env}]
        )["CreateAccountStatus"]["AccountId"]
        org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=parent)
        accounts[name] = account
    org.close_account(AccountId=accounts["closed-c"])
    return Org(web, eu, accounts)


def selecting_body(org: Org, params_by_account: dict[str, Any], **select: Any) -> str:
    return json.dumps(
        {
            "version": 1,
            "task": "cloudfront.invalidate",
            "request_id": "req-select-1",
            "select": {
                "organizational_units": [org.web],
                "include_child_ous": True,
                "account_tags": {"env": "prod"},
                "exclude_accounts": [org.accounts["excluded-e"]],
                "params_by_account": params_by_account,
                **select,
            },
            "params": {"paths": ["/index.html"]},
        }
    )


@pytest.fixture
def org(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Org:
    made = make_org()
    allowed = [made.accounts[n] for n in ("prod-a", "dev-b", "prod-d", "excluded-e")]
    work = boto3.client("sqs").create_queue(QueueName="fanout-work")["QueueUrl"]
    monkeypatch.setenv("ALLOWED_ACCOUNT_IDS", ",".join(allowed))
    monkeypatch.setenv("WORK_QUEUE_URL", work)
    monkeypatch.setenv("LEDGER_TABLE", create_ledger_table())
    app.reset()
    return made


def work_queue() -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="fanout-work")["QueueUrl"]
    found: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
    ).get("Messages", []):
        for m in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        found.extend(dict(m) for m in batch)
    return found


def test_a_selection_names_active_accounts_of_the_ous_with_the_tags_minus_exclusions(
    org: Org,
) -> None:
    """GIVEN an OU with a child OU, tagged accounts, a suspended one and an excluded one
    WHEN the selection is resolved with and without child OUs
    THEN it names the active, tagged, not excluded accounts (the child OU's only with
    include_child_ous), and says what it left out."""
    directory = Directory(lambda: boto3.client("organizations"))
    ids = org.accounts
    wanted = {
        "organizational_units": [org.web],
        "account_tags": {"env": "prod"},
        "exclude_accounts": [ids["excluded-e"]],
    }

    flat = select_accounts(Selection.of(wanted, default_region=REGION), directory)
    deep = select_accounts(
        Selection.of({**wanted, "include_child_ous": True}, default_region=REGION), directory
    )

    assert set(flat.accounts) == {ids["prod-a"], ids["outsider-f"]}
    assert set(deep.accounts) == {ids["prod-a"], ids["prod-d"], ids["outsider-f"]}
    assert deep.inactive == {ids["closed-c"]: "SUSPENDED"}
    assert deep.excluded == (ids["excluded-e"],)
    assert deep.untagged == 1  # dev-b


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"select": {"regions": ["us-east-1"]}}, "must name organizational_units or account_tags"),
        ({"request": {"targets": 3}}, "body.request cannot go with body.select"),
        ({"select": None}, "body needs targets, select, or both"),
        ({"select": {"organizational_units": ["ou-bad"]}}, "must match"),
    ],
)
def test_a_bad_selection_is_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    body: dict[str, Any] = {
        "version": 1,
        "task": "cloudfront.invalidate",
        "params": {"paths": ["/x"], "distribution_id": "EDIST0001"},
        "select": {"organizational_units": ["ou-ab12-abcd1234"]},
    }
    body.update(change)
    if change.get("select", ...) is None:
        del body["select"]

    with pytest.raises(BadMessageError, match=reason):
        parse_message(json.dumps(body), message_id="m-1", default_region=REGION)


def test_a_selection_is_expanded_once_into_parts_and_refused_accounts_are_never_assumed(
    org: Org, context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a selection over an OU tree: 2 allowed accounts, 1 outside the allow-list, one
    excluded, one suspended
    WHEN the selecting message is delivered twice and then its parts are processed
    THEN the second delivery enqueues nothing; the request record counts 3 targets from the
    start; the allowed accounts are invalidated; the outsider ends dead-lettered with its
    reason; and no role is assumed in the outsider, the excluded or the suspended account."""
    ids = org.accounts
    dists = {n: create_distribution(ids[n]) for n in ("prod-a", "prod-d")}
    params = {ids[n]: {"distribution_id": d} for n, d in dists.items()}
    params[ids["outsider-f"]] = {"distribution_id": "EOUTSIDER1"}
    body = selecting_body(org, params)
    api_calls.calls.clear()

    first = lambda_handler(sqs_event(sqs_record(body, message_id="sel-1")), context)
    parts = work_queue()
    again = lambda_handler(
        sqs_event(sqs_record(body, message_id="sel-1", receive_count=2)), context
    )

    assert failures(first) == failures(again) == []
    assert work_queue() == []  # the redelivery sent nothing
    assert len(parts) == 2  # the allowed targets, and the outsider's part of its own
    requests = DynamoDBRequests("fanout-ledger", lambda: boto3.client("dynamodb"))
    record = requests.requests(["req-select-1"])["req-select-1"]
    assert record.expected == 3
    assert any("not active, not targeted" in note for note in record.notes)

    response = lambda_handler(
        sqs_event(*(sqs_record(p["Body"], message_id=p["MessageId"]) for p in parts)), context
    )

    assert failures(response) == []
    for name, dist in dists.items():
        assert [i["Paths"]["Items"] for i in invalidations(ids[name], dist)] == [["/index.html"]]
    [letter] = dead_letters()
    assert f"account {ids['outsider-f']} is not in ALLOWED_ACCOUNT_IDS" in letter["fanout.reason"]
    assumed = [c[2]["RoleArn"] for c in api_calls.calls if c[1] == "AssumeRole"]
    for name in ("outsider-f", "excluded-e", "closed-c"):
        assert not [arn for arn in assumed if ids[name] in arn], name
    record = requests.requests(["req-select-1"])["req-select-1"]
    assert record.counts()["succeeded"] == 2
    assert record.counts()["failed"] == 1
    assert record.outcome == "failed"


def test_a_selection_that_matches_nothing_is_dead_lettered_with_what_it_left_out(
    org: Org, context: FakeLambdaContext
) -> None:
    body = selecting_body(org, {}, account_tags={"env": "staging"})

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert failures(response) == []
    assert work_queue() == []
    [letter] = dead_letters()
    assert "body.select matched no target" in letter["fanout.reason"]
    assert "without the tags asked for" in letter["fanout.reason"]


def test_a_ledger_outage_during_expansion_returns_the_selection_and_sends_nothing(
    org: Org,
    context: FakeLambdaContext,
    fail_operation: Callable[..., None],
) -> None:
    """GIVEN a selection, and the ledger refusing the first write of its parts (a 500)
    WHEN it is delivered, then delivered again
    THEN the first delivery sends nothing and returns the message (a batch item failure); the
    second expands and sends its parts once."""
    ids = org.accounts
    params = {
        ids[n]: {"distribution_id": f"EDIST{n[-1].upper()}00001"} for n in ("prod-a", "prod-d")
    }
    params[ids["outsider-f"]] = {"distribution_id": "EOUTSIDER1"}
    body = selecting_body(org, params)
    fail_operation("PutItem", "InternalServerError", status=500, times=1)

    first = lambda_handler(sqs_event(sqs_record(body, message_id="sel-2")), context)
    sent_first = work_queue()
    again = lambda_handler(
        sqs_event(sqs_record(body, message_id="sel-2", receive_count=2)), context
    )

    assert failures(first) == ["sel-2"]
    assert sent_first == []
    assert failures(again) == []
    assert len(work_queue()) == 2
