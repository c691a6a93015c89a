"""The Lambda handler end to end, in-process: SQS event in, effects in moto's accounts out.

These are the worker-core acceptance checks: legacy bodies keep working, a bad record never
blocks a good one, STS and CloudFront calls stay few, and redelivery never duplicates work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from handler import app
from handler.app import lambda_handler
from tests.unit.fakes import (
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

pytestmark = pytest.mark.usefixtures("worker_env")


def invalidate_target(account: str, distribution_id: str, *paths: str) -> dict[str, Any]:
    params: dict[str, Any] = {"distribution_id": distribution_id}
    if paths:
        params["paths"] = list(paths)
    return {"account": account, "params": params}


def test_legacy_entries_create_an_invalidation_in_each_target_account(
    context: FakeLambdaContext,
) -> None:
    """GIVEN a legacy {"entries": [...]} body naming distributions in two accounts
    WHEN the handler processes it
    THEN each account has one invalidation with its paths, and nothing is reported failed."""
    first, second = TARGET_ACCOUNTS[:2]
    dist_a, dist_b = create_distribution(first), create_distribution(second)
    body = json.dumps(
        {
            "entries": [
                {
                    "aws_account_id": first,
                    "cloudfront_distribution_id": dist_a,
                    "invalidation_path": "/images/cat.jpg",
                },
                {
                    "aws_account_id": second,
                    "cloudfront_distribution_id": dist_b,
                    "invalidation_path": "/index.html",
                },
            ]
        }
    )

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert failures(response) == []
    assert [b["Paths"]["Items"] for b in invalidations(first, dist_a)] == [["/images/cat.jpg"]]
    assert [b["Paths"]["Items"] for b in invalidations(second, dist_b)] == [["/index.html"]]


def test_unparseable_record_is_dead_lettered_while_its_good_sibling_takes_effect(
    context: FakeLambdaContext,
) -> None:
    """GIVEN a batch with one body that is not JSON and one good v1 body
    WHEN the handler processes it
    THEN the good one takes effect, the bad one is in the DLQ with a reason and its source
    message id, and the bad one is NOT reported as a batch-item failure (no endless retry)."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    bad = sqs_record("not json {")
    good = sqs_record(
        v1_body(
            "cloudfront.invalidate",
            [invalidate_target(account, dist)],
            params={"paths": ["/index.html"]},
        )
    )

    response = lambda_handler(sqs_event(bad, good), context)

    assert failures(response) == []
    assert len(invalidations(account, dist)) == 1
    [letter] = dead_letters()
    assert letter["body"] == "not json {"
    assert letter["fanout.error_class"] == "BadMessageError"
    assert letter["fanout.reason"].startswith("body is not valid JSON")
    assert "\n" not in letter["fanout.reason"]
    assert letter["fanout.source_message_id"] == bad["messageId"]


def test_hundred_jobs_over_five_accounts_assume_each_role_once_and_invalidate_once_each(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN 10 messages x 10 targets = 100 jobs over 5 accounts and 10 distributions
    WHEN one batch is processed
    THEN there are 5 AssumeRole calls and one CreateInvalidation per distribution, holding the
    union of the paths its jobs asked for."""
    distributions = {a: [create_distribution(a), create_distribution(a)] for a in TARGET_ACCOUNTS}
    records = []
    for message in range(10):
        targets = [
            invalidate_target(account, dist, f"/m{message}/{account}.html")
            for account, dists in distributions.items()
            for dist in dists
        ]
        records.append(sqs_record(v1_body("cloudfront.invalidate", targets)))
    api_calls.calls.clear()

    response = lambda_handler(sqs_event(*records), context)

    assert failures(response) == []
    assert api_calls.count("AssumeRole") == 5
    created = api_calls.of("CreateInvalidation")
    assert sorted(c["DistributionId"] for c in created) == sorted(
        d for dists in distributions.values() for d in dists
    )
    for call in created:
        assert call["InvalidationBatch"]["Paths"]["Quantity"] == 10


def test_redelivered_message_reuses_the_same_caller_reference(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a message that is delivered, then delivered again (SQS at-least-once)
    WHEN the handler processes both deliveries
    THEN both CreateInvalidation calls carry the same CallerReference per distribution,
    so real CloudFront returns the existing invalidation instead of creating a second."""
    account = TARGET_ACCOUNTS[0]
    dists = [create_distribution(account), create_distribution(account)]
    body = v1_body(
        "cloudfront.invalidate",
        [invalidate_target(account, d) for d in dists],
        params={"paths": ["/b", "/a", "/img/*"]},
    )

    lambda_handler(sqs_event(sqs_record(body, message_id="m-1")), context)
    lambda_handler(sqs_event(sqs_record(body, message_id="m-1", receive_count=2)), context)

    references: dict[str, set[str]] = {}
    for call in api_calls.of("CreateInvalidation"):
        references.setdefault(call["DistributionId"], set()).add(
            call["InvalidationBatch"]["CallerReference"]
        )
    assert sorted(references) == sorted(dists)
    assert all(len(refs) == 1 for refs in references.values())
    assert len(set().union(*references.values())) == 2  # distinct per distribution


def test_warm_invocation_reuses_assumed_role_sessions(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a first invocation that assumed the role in an account
    WHEN a second invocation targets the same account
    THEN no further AssumeRole call is made."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    api_calls.calls.clear()
    for path in ("/one", "/two"):
        body = v1_body("cloudfront.invalidate", [invalidate_target(account, dist, path)])
        lambda_handler(sqs_event(sqs_record(body)), context)

    assert api_calls.count("AssumeRole") == 1
    assert api_calls.count("CreateInvalidation") == 2


def test_assume_role_names_the_request_and_uses_the_configured_role(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a request id with characters IAM refuses in session names
    WHEN the handler assumes the target role
    THEN the role ARN comes from TARGET_ROLE_NAME and RoleSessionName/SourceIdentity are
    valid (<= 64 of [\\w+=,.@-]) and carry the request id."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    api_calls.calls.clear()
    body = v1_body(
        "cloudfront.invalidate",
        [invalidate_target(account, dist, "/x")],
        request_id="change/CHG0042:sales-peak" + "x" * 80,
    )

    lambda_handler(sqs_event(sqs_record(body)), context)

    [assume] = api_calls.of("AssumeRole")
    assert assume["RoleArn"] == f"arn:aws:iam::{account}:role/OpsFanoutTargetRole"
    name = assume["RoleSessionName"]
    assert name.startswith("fanout-change/CHG0042") is False  # '/' and ':' are not allowed
    assert name.startswith("fanout-change-CHG0042-sales-peak")
    assert len(name) <= 64
    assert assume["SourceIdentity"] == name


@pytest.mark.parametrize(
    ("body", "reason_part"),
    [
        pytest.param(
            v1_body("cloudfront.invalidate", [invalidate_target("999999999999", "EDIST1234", "/")]),
            "account 999999999999 is not in ALLOWED_ACCOUNT_IDS",
            id="account-not-allowed",
        ),
        pytest.param(
            v1_body(
                "cloudfront.invalidate",
                [invalidate_target(TARGET_ACCOUNTS[0], "EDIST1234", "/")],
                role_arn="arn:aws:iam::111111111111:role/Admin",
            ),
            "body has unknown field(s): role_arn",
            id="injected-role-arn",
        ),
        pytest.param(
            v1_body(
                "cloudfront.invalidate",
                [
                    {
                        **invalidate_target(TARGET_ACCOUNTS[0], "EDIST1234", "/"),
                        "region": "cn-north-1",
                    }
                ],
            ),
            "partition aws-cn",
            id="foreign-partition",
        ),
        pytest.param(
            v1_body(
                "cloudfront.invalidate",
                [invalidate_target(TARGET_ACCOUNTS[0], "EDIST1234", "/")],
                request_id="r" * 129,
            ),
            "body.request_id must match ^",
            id="over-long-session-name",
        ),
        pytest.param(
            v1_body(
                "cloudfront.invalidate",
                [invalidate_target(TARGET_ACCOUNTS[0], "EDIST1234", "/")],
                request_id="req\nRoleSessionName=admin",
            ),
            "body.request_id must match ^",
            id="injected-session-name",
        ),
        pytest.param(
            v1_body(
                "cloudfront.invalidate",
                [invalidate_target(TARGET_ACCOUNTS[0], f"EDIST{i:05d}", "/") for i in range(501)],
            ),
            "message has 501 targets; MAX_TARGETS_PER_MESSAGE is 500",
            id="too-many-targets",
        ),
        pytest.param(
            v1_body("ec2.terminate_everything", [{"account": TARGET_ACCOUNTS[0]}]),
            "unknown task 'ec2.terminate_everything'",
            id="unknown-task",
        ),
        pytest.param(
            v1_body(
                "cloudfront.invalidate", [invalidate_target(TARGET_ACCOUNTS[0], "EDIST1234", "x")]
            ),
            "target 0",
            id="path-without-slash",
        ),
    ],
)
def test_permanently_bad_message_is_dead_lettered_without_any_sts_call(
    body: str, reason_part: str, context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a message that can never succeed
    WHEN the handler processes it
    THEN it is dead-lettered with a single-line reason, acknowledged, and no role is assumed."""
    record = sqs_record(body)
    api_calls.calls.clear()

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == []
    assert api_calls.count("AssumeRole") == 0
    [letter] = dead_letters()
    assert reason_part in letter["fanout.reason"]
    assert "\n" not in letter["fanout.reason"]


def test_throttling_that_outlasts_backoff_returns_the_message_for_redelivery(
    context: FakeLambdaContext,
    fail_operation: Callable[..., None],
    no_sleep: None,
) -> None:
    """GIVEN CloudFront answers every CreateInvalidation with Throttling
    WHEN the handler processes a message
    THEN the message is reported as a batch-item failure (SQS redelivers it) and nothing is
    dead-lettered."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    fail_operation("CreateInvalidation", "Throttling")
    record = sqs_record(v1_body("cloudfront.invalidate", [invalidate_target(account, dist, "/")]))

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == [record["messageId"]]
    assert dead_letters() == []


def test_transient_throttling_is_absorbed_by_backoff(
    context: FakeLambdaContext,
    fail_operation: Callable[..., None],
    no_sleep: None,
) -> None:
    """GIVEN CloudFront throttles the first two CreateInvalidation attempts
    WHEN the handler processes a message
    THEN the jittered retry succeeds within the invocation and the invalidation exists once."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    fail_operation("CreateInvalidation", "Throttling", times=2)
    record = sqs_record(v1_body("cloudfront.invalidate", [invalidate_target(account, dist, "/")]))

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == []
    assert len(invalidations(account, dist)) == 1


def test_one_missing_distribution_dead_letters_only_that_target(
    context: FakeLambdaContext,
) -> None:
    """GIVEN a message for two accounts where one distribution does not exist
    WHEN the handler processes it
    THEN the existing one is invalidated, and the DLQ holds a v1 body with only the failed
    target, so a redrive can never repeat the success."""
    good_account, bad_account = TARGET_ACCOUNTS[:2]
    dist = create_distribution(good_account)
    record = sqs_record(
        v1_body(
            "cloudfront.invalidate",
            [invalidate_target(good_account, dist), invalidate_target(bad_account, "EMISSING123")],
            params={"paths": ["/p"]},
            request_id="req-partial",
        )
    )

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == []
    assert len(invalidations(good_account, dist)) == 1
    [letter] = dead_letters()
    dead = json.loads(letter["body"])
    assert [t["account"] for t in dead["targets"]] == [bad_account]
    assert dead["request_id"] == "req-partial"
    assert letter["fanout.targets"] == f"{bad_account}/us-east-1"
    assert letter["fanout.error_class"] == "TaskFailedError"


def test_no_call_is_started_without_time_to_finish_it(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN an invocation with almost no time left
    WHEN the handler gets a batch
    THEN it starts no call and reports the message for redelivery (never lost)."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    record = sqs_record(v1_body("cloudfront.invalidate", [invalidate_target(account, dist, "/")]))
    api_calls.calls.clear()

    response = lambda_handler(sqs_event(record), FakeLambdaContext(remaining_ms=2_000))

    assert failures(response) == [record["messageId"]]
    assert api_calls.count("CreateInvalidation") == 0
    assert invalidations(account, dist) == []


def test_ssm_send_command_runs_in_the_target_account(context: FakeLambdaContext) -> None:
    """GIVEN an ssm.send_command message for two accounts
    WHEN the handler processes it
    THEN each account has one command of that document, its comment carrying the job token
    and the request id."""
    targets = [{"account": a} for a in TARGET_ACCOUNTS[:2]]
    body = v1_body(
        "ssm.send_command",
        targets,
        request_id="patch-42",
        params={
            "document_name": "AWS-RunShellScript",
            "instance_ids": ["i-0123456789abcdef0"],
            "parameters": {"commands": ["uptime"]},
        },
    )

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert failures(response) == []
    for account in TARGET_ACCOUNTS[:2]:
        [command] = client_in(account, "ssm").list_commands()["Commands"]
        assert command["DocumentName"] == "AWS-RunShellScript"
        assert re.fullmatch(r"\[fanout:[0-9a-f]{16}\] fanout request patch-42", command["Comment"])


def test_without_a_dead_letter_queue_url_bad_messages_fall_back_to_sqs_redrive(
    context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN DEAD_LETTER_QUEUE_URL is unset
    WHEN a bad message arrives
    THEN it is reported as a batch-item failure, so the queue's redrive policy moves it."""
    monkeypatch.delenv("DEAD_LETTER_QUEUE_URL")
    app.reset()
    record = sqs_record("[]")

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == [record["messageId"]]


def test_dead_letter_queue_outage_keeps_the_message(
    context: FakeLambdaContext, fail_operation: Callable[..., None]
) -> None:
    """GIVEN the DLQ refuses SendMessage
    WHEN a bad message arrives
    THEN it is reported as a batch-item failure rather than acknowledged and lost."""
    fail_operation("SendMessage", "ServiceUnavailable", status=503)
    record = sqs_record("not json")

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == [record["messageId"]]
