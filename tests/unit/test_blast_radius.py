"""Blast-radius controls: who may be targeted, canaries, max_errors, dry runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from handler import app
from handler.api import status_source
from handler.app import lambda_handler
from tests.unit.fakes import (
    OPS_ACCOUNT,
    TARGET_ACCOUNTS,
    ApiCalls,
    FakeLambdaContext,
    client_in,
    create_distribution,
    dead_letters,
    failures,
    invalidations,
    sqs_event,
    sqs_record,
    v1_body,
)
from tests.unit.test_ledger import create_ledger_table

pytestmark = pytest.mark.usefixtures("worker_env")


def invalidate(targets: list[tuple[str, str]], **extra: Any) -> str:
    return v1_body(
        "cloudfront.invalidate",
        [{"account": a, "params": {"distribution_id": d}} for a, d in targets],
        params={"paths": ["/x"]},
        **extra,
    )


def test_the_workers_own_account_is_refused_unless_listed_explicitly(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN ALLOW_ANY_ACCOUNT=true (no allow-list)
    WHEN a message targets the worker's own account (the function's account)
    THEN it is dead-lettered with that reason and no role is assumed."""
    monkeypatch.setenv("ALLOW_ANY_ACCOUNT", "true")
    monkeypatch.setenv("ALLOWED_ACCOUNT_IDS", "")
    app.reset()

    response = lambda_handler(
        sqs_event(sqs_record(invalidate([(OPS_ACCOUNT, "EDIST00001")]))), context
    )

    assert failures(response) == []
    assert api_calls.count("AssumeRole") == 0
    [letter] = dead_letters()
    assert "worker's own account" in letter["fanout.reason"]


def test_accounts_of_an_allowed_ou_are_allowed_and_others_are_not(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    """GIVEN ALLOWED_OU_IDS naming an OU with one member account (resolved via Organizations)
    WHEN messages target the member and an account outside the OU
    THEN the member is invalidated and the outsider is dead-lettered."""
    org = boto3.client("organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name="web")["OrganizationalUnit"]["Id"]
    member = org.create_account(AccountName="shop", Email="shop@example.com")[
        "CreateAccountStatus"
    ]["AccountId"]
    org.move_account(AccountId=member, SourceParentId=root, DestinationParentId=ou)
    monkeypatch.setenv("ALLOWED_ACCOUNT_IDS", "")
    monkeypatch.setenv("ALLOWED_OU_IDS", ou)
    app.reset()
    dist = create_distribution(member)
    outsider = TARGET_ACCOUNTS[0]

    response = lambda_handler(
        sqs_event(
            sqs_record(invalidate([(member, dist)])),
            sqs_record(invalidate([(outsider, "EDIST00001")])),
        ),
        context,
    )

    assert failures(response) == []
    assert len(invalidations(member, dist)) == 1
    [letter] = dead_letters()
    assert (
        f"account {outsider} is not in ALLOWED_ACCOUNT_IDS or ALLOWED_OU_IDS"
        in (letter["fanout.reason"])
    )


def test_a_failed_canary_holds_back_the_other_targets(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN options.canary and a first target that fails (missing distribution)
    WHEN the handler processes the message
    THEN only the canary was attempted, and every target is dead-lettered: the canary with its
    failure, the others in a letter of their own "not run: canary target ... failed"."""
    first, second, third = TARGET_ACCOUNTS[:3]
    targets = [(first, "EMISSING01"), (second, create_distribution(second))]
    targets.append((third, create_distribution(third)))
    api_calls.calls.clear()

    response = lambda_handler(
        sqs_event(sqs_record(invalidate(targets, options={"canary": True}))), context
    )

    assert failures(response) == []
    assert [c["DistributionId"] for c in api_calls.of("CreateInvalidation")] == ["EMISSING01"]
    letters = {letter["fanout.error_class"]: letter for letter in dead_letters()}
    assert sorted(letters) == ["NotRunError", "TaskFailedError"]
    assert len(json.loads(letters["TaskFailedError"]["body"])["targets"]) == 1
    assert len(json.loads(letters["NotRunError"]["body"])["targets"]) == 2
    assert "canary target" in letters["NotRunError"]["fanout.reason"]


def test_a_successful_canary_lets_the_fan_out_continue(context: FakeLambdaContext) -> None:
    """GIVEN options.canary and healthy targets WHEN processed THEN every target is invalidated."""
    targets = [(a, create_distribution(a)) for a in TARGET_ACCOUNTS[:3]]

    response = lambda_handler(
        sqs_event(sqs_record(invalidate(targets, options={"canary": True}))), context
    )

    assert failures(response) == []
    assert all(len(invalidations(a, d)) == 1 for a, d in targets)


def test_max_errors_stops_the_fan_out_after_too_many_failures(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN five targets that would all fail and options.max_errors=1 (one lane at a time)
    WHEN the handler processes the message
    THEN it stops after the second failure: two calls made, five targets dead-lettered (two
    failed, three not run)."""
    monkeypatch.setenv("MAX_WORKERS", "1")
    app.reset()
    targets = [(a, "EMISSING01") for a in TARGET_ACCOUNTS]
    api_calls.calls.clear()

    lambda_handler(sqs_event(sqs_record(invalidate(targets, options={"max_errors": 1}))), context)

    assert api_calls.count("CreateInvalidation") == 2
    counts = {
        letter["fanout.error_class"]: len(json.loads(letter["body"])["targets"])
        for letter in dead_letters()
    }
    assert counts == {"TaskFailedError": 2, "NotRunError": 3}


def test_max_errors_as_a_percentage_of_targets(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN five failing targets and max_errors "20%" (= 1 target)
    WHEN processed THEN the fan-out stops after the second failure, as with max_errors=1."""
    monkeypatch.setenv("MAX_WORKERS", "1")
    app.reset()
    targets = [(a, "EMISSING01") for a in TARGET_ACCOUNTS]
    api_calls.calls.clear()

    lambda_handler(
        sqs_event(sqs_record(invalidate(targets, options={"max_errors": "20%"}))), context
    )

    assert api_calls.count("CreateInvalidation") == 2


def test_dry_run_validates_and_reports_but_touches_nothing(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN options.dry_run on a valid message
    WHEN processed THEN the role is assumed (a pre-flight: would the target run?) but the
    task's API is not called, nothing is dead-lettered, and the ledger says "would run"."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    api_calls.calls.clear()

    response = lambda_handler(
        sqs_event(sqs_record(invalidate([(account, dist)], options={"dry_run": True}))), context
    )

    assert failures(response) == []
    assert api_calls.count("AssumeRole") == 1
    assert api_calls.count("CreateInvalidation") == 0
    assert invalidations(account, dist) == []
    assert dead_letters() == []


def test_dry_run_still_refuses_a_disallowed_account(context: FakeLambdaContext) -> None:
    """GIVEN a dry run naming an account outside the allow-list
    WHEN processed THEN it is refused like a real run (dry runs resolve targets too)."""
    response = lambda_handler(
        sqs_event(
            sqs_record(invalidate([("999999999999", "EDIST00001")], options={"dry_run": True}))
        ),
        context,
    )

    assert failures(response) == []
    [letter] = dead_letters()
    assert "999999999999" in letter["fanout.reason"]


def test_client_in_helper_acts_in_the_named_account() -> None:
    """GIVEN the test helper client_in WHEN it creates a distribution
    THEN the distribution is invisible from another account (moto isolates accounts)."""
    dist = create_distribution(TARGET_ACCOUNTS[0])
    other = client_in(TARGET_ACCOUNTS[1], "cloudfront").list_distributions()["DistributionList"]

    assert dist not in [d["Id"] for d in other.get("Items", [])]


def test_an_account_outside_the_allow_list_is_refused_whatever_its_params_say(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a target outside ALLOWED_ACCOUNT_IDS whose params are also invalid (no
    distribution_id), as a selection's part for a refused account may be
    WHEN the handler processes it
    THEN it ends with the refusal (the more fundamental reason), and no role is assumed."""
    body = v1_body("cloudfront.invalidate", [{"account": "999999999999"}], params={"paths": ["/x"]})

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert failures(response) == []
    assert api_calls.count("AssumeRole") == 0
    [letter] = dead_letters()
    assert letter["fanout.error_class"] == "AccountNotAllowedError"
    assert "account 999999999999 is not in ALLOWED_ACCOUNT_IDS" in letter["fanout.reason"]


def test_a_dry_run_reports_a_region_its_account_cannot_use(
    context: FakeLambdaContext,
    api_calls: ApiCalls,
    fail_operation: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GIVEN a dry run whose target region is not enabled for the account (STS in that region
    refuses the assumed role's token, as AWS does for an opt-in region not opted into)
    WHEN processed THEN the target ends as a dry run that says it would not run and why,
    nothing is dead-lettered, and the task's API is not called."""
    monkeypatch.setenv("LEDGER_TABLE", create_ledger_table())
    app.reset()
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    fail_operation("GetCallerIdentity", "InvalidClientTokenId", status=403)
    api_calls.calls.clear()
    body = invalidate([(account, dist)], options={"dry_run": True}, request_id="dry-region")

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert failures(response) == []
    assert api_calls.count("CreateInvalidation") == 0
    assert dead_letters() == []
    [job] = status_source("fanout-ledger", lambda: boto3.client("dynamodb")).jobs.jobs("dry-region")
    assert job.state.value == "dry_run"
    assert job.last_error is not None
    assert job.last_error.startswith(
        f"would not run: region us-east-1 cannot be used in account {account}"
    )
