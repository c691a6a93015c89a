"""``fanout publish`` against the emulator's queue: validation first, then batched sends."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fanout.cli import main
from fanout.emulator import Organisation

pytestmark = pytest.mark.integration

DISTRIBUTION = "E2QWRUHEXAMPLE"


def bodies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in messages]


def test_an_invalid_task_is_refused_with_exit_2_and_nothing_is_sent(
    aws_env: Organisation,
    capsys: pytest.CaptureFixture[str],
    depth: Callable[[str], tuple[int, int]],
) -> None:
    """GIVEN an invalidation whose path does not start with '/'
    WHEN it is published
    THEN the exit code is 2, stderr gives the worker's one-line reason, and the queue is empty."""
    code = main(
        [
            "publish",
            "cloudfront.invalidate",
            "--accounts",
            "111111111111",
            "--param",
            "paths=index.html",
            "--target-param",
            f"111111111111:distribution_id={DISTRIBUTION}",
        ]
    )

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "paths" in err
    assert depth(aws_env.queue_url) == (0, 0)


def test_an_unknown_task_is_refused_with_exit_2(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a task name no plugin registers
    WHEN it is published
    THEN the exit code is 2 and the reason lists the known tasks."""
    code = main(["publish", "cloudfront.purge", "--accounts", "111111111111"])

    assert code == 2
    assert "cloudfront.invalidate" in capsys.readouterr().err


def test_many_targets_are_split_into_messages_sharing_one_request_id(
    aws_env: Organisation,
    capsys: pytest.CaptureFixture[str],
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN 120 target accounts (outside the emulator's allow-list: sent with --force)
    WHEN a task is published with the default of 50 targets per message
    THEN 3 messages carry 50, 50 and 20 targets under the one request id that was printed,
    each with that request id as its MessageGroupId (its tenant for SQS fair queues: the
    targets are in many accounts)."""
    accounts = [f"{n:012d}" for n in range(100_000_000_000, 100_000_000_120)]

    code = main(
        [
            "publish",
            "ssm.send_command",
            "--force",
            "--accounts",
            ",".join(accounts),
            "--param",
            "document_name=AWS-RunShellScript",
            "--param",
            'targets=[{"key": "tag:Role", "values": ["web"]}]',
        ]
    )

    printed = re.findall(r"^request id: (\S+)$", capsys.readouterr().out, re.MULTILINE)
    messages = read_queue(aws_env.queue_url)
    sent = bodies(messages)
    assert code == 0
    assert sorted(len(b["targets"]) for b in sent) == [20, 50, 50]
    assert {b["request_id"] for b in sent} == set(printed)
    assert len(printed) == 1
    assert sorted(t["account"] for b in sent for t in b["targets"]) == accounts
    groups = [m["Attributes"].get("MessageGroupId") for m in messages]
    assert groups == printed * 3


def test_params_accumulate_and_per_account_params_go_to_their_target(
    aws_env: Organisation, read_queue: Callable[[str], list[dict[str, Any]]]
) -> None:
    """GIVEN a repeated --param key, per-account --target-param values, and two regions
    WHEN the task is published
    THEN the key holds a list, and each account x region target carries its own params."""
    code = main(
        [
            "publish",
            "cloudfront.invalidate",
            "--accounts",
            "111111111111,222222222222",
            "--regions",
            "us-east-1,eu-west-1",
            "--param",
            "paths=/index.html",
            "--param",
            "paths=/img/*",
            "--target-param",
            "111111111111:distribution_id=EAAAAAAAAAAAA",
            "--target-param",
            "222222222222:distribution_id=EBBBBBBBBBBBB",
            "--request-id",
            "release-42",
            "--dry-run",
        ]
    )

    (body,) = bodies(read_queue(aws_env.queue_url))
    assert code == 0
    assert body["request_id"] == "release-42"
    assert body["params"] == {"paths": ["/index.html", "/img/*"]}
    assert body["options"] == {"dry_run": True}
    assert [
        (t["account"], t["region"], t["params"]["distribution_id"]) for t in body["targets"]
    ] == [
        ("111111111111", "us-east-1", "EAAAAAAAAAAAA"),
        ("111111111111", "eu-west-1", "EAAAAAAAAAAAA"),
        ("222222222222", "us-east-1", "EBBBBBBBBBBBB"),
        ("222222222222", "eu-west-1", "EBBBBBBBBBBBB"),
    ]


def test_a_prepared_legacy_body_is_sent_unchanged(
    aws_env: Organisation,
    tmp_path: Any,
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN a file holding a legacy {"entries": [...]} body
    WHEN it is published with --file
    THEN the queue receives that body as it was written."""
    legacy = {
        "entries": [
            {
                "aws_account_id": "111111111111",
                "cloudfront_distribution_id": DISTRIBUTION,
                "invalidation_path": "/images/cat.jpg",
            }
        ]
    }
    path = tmp_path / "body.json"
    path.write_text(json.dumps(legacy))

    code = main(["publish", "--file", str(path)])

    assert code == 0
    assert bodies(read_queue(aws_env.queue_url)) == [legacy]


# --- what a new user tripped over ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def publish_invalidation(*args: str) -> int:
    return main(
        [
            "publish",
            "cloudfront.invalidate",
            "--target-param",
            f"111111111111:distribution_id={DISTRIBUTION}",
            *args,
        ]
    )


def test_a_comma_separated_list_parameter_is_a_list_and_json_keeps_a_comma(
    aws_env: Organisation, read_queue: Callable[[str], list[dict[str, Any]]]
) -> None:
    """GIVEN --param paths=/a.html,/b/* and a JSON list holding a path with a comma
    WHEN the invalidation is published
    THEN paths holds three items: the two comma-separated ones and the JSON one, whole."""
    code = publish_invalidation(
        "--accounts", "111111111111", "--param", "paths=/a.html,/b/*", "--param", 'paths=["/c,d"]'
    )

    (body,) = bodies(read_queue(aws_env.queue_url))
    assert code == 0
    assert body["params"]["paths"] == ["/a.html", "/b/*", "/c,d"]


@pytest.mark.parametrize(("given", "sent"), [("3", 3), ("10%", "10%")])
def test_canary_and_max_errors_flags_become_the_envelope_options(
    aws_env: Organisation,
    read_queue: Callable[[str], list[dict[str, Any]]],
    given: str,
    sent: int | str,
) -> None:
    """GIVEN --canary and --max-errors as a count or a percentage
    WHEN the task is published
    THEN the body's options say canary and max_errors (a count as a number)."""
    code = publish_invalidation(
        "--accounts", "111111111111", "--param", "paths=/x", "--canary", "--max-errors", given
    )

    (body,) = bodies(read_queue(aws_env.queue_url))
    assert code == 0
    assert body["options"] == {"canary": True, "max_errors": sent}


def test_rollout_flags_become_the_envelope_options(
    aws_env: Organisation, read_queue: Callable[[str], list[dict[str, Any]]]
) -> None:
    """GIVEN --max-concurrency 25% --ramp exponential WHEN the task is published
    THEN the body's options carry both, as the worker reads them."""
    code = publish_invalidation(
        "--accounts",
        "111111111111",
        "--param",
        "paths=/x",
        "--max-concurrency",
        "25%",
        "--ramp",
        "exponential",
    )

    (body,) = bodies(read_queue(aws_env.queue_url))
    assert code == 0
    assert body["options"] == {"max_concurrency": "25%", "ramp": "exponential"}


def test_region_order_goes_in_every_part_with_the_requests_targets_per_region(
    aws_env: Organisation, read_queue: Callable[[str], list[dict[str, Any]]]
) -> None:
    """GIVEN one account in two regions, --region-order eu-west-1 and one target per message
    WHEN the task is published THEN both parts carry region_order and the whole request's
    targets per region, so whichever the worker sees first knows when eu-west-1 is done."""
    code = publish_invalidation(
        "--accounts",
        "111111111111",
        "--regions",
        "us-east-1,eu-west-1",
        "--param",
        "paths=/x",
        "--region-order",
        "eu-west-1",
        "--max-targets",
        "1",
    )

    sent = bodies(read_queue(aws_env.queue_url))
    assert code == 0
    assert len(sent) == 2
    for body in sent:
        assert body["options"] == {"region_order": ["eu-west-1"]}
        assert body["request"]["regions"] == {"eu-west-1": 1, "us-east-1": 1}


def test_a_region_order_naming_no_region_is_refused_with_one_line(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str], depth: Callable[[str], Any]
) -> None:
    code = publish_invalidation(
        "--accounts", "111111111111", "--param", "paths=/x", "--region-order", "eu-west-1,mars"
    )

    err = capsys.readouterr().err
    assert (code, len(err.splitlines())) == (2, 1)
    assert "region_order" in err
    assert depth(aws_env.queue_url) == (0, 0)


def test_a_ramp_without_max_concurrency_is_refused_and_nothing_is_sent(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str], depth: Callable[[str], Any]
) -> None:
    """GIVEN --ramp without --max-concurrency WHEN publishing THEN exit 2, one line saying
    why, nothing sent."""
    code = publish_invalidation(
        "--accounts", "111111111111", "--param", "paths=/x", "--ramp", "exponential"
    )

    err = capsys.readouterr().err
    assert (code, len(err.splitlines())) == (2, 1)
    assert "--ramp needs --max-concurrency" in err
    assert depth(aws_env.queue_url) == (0, 0)


@pytest.mark.parametrize("given", ["0", "0%", "1001", "150%"])
def test_a_max_concurrency_that_admits_nothing_or_too_much_is_a_usage_error(
    aws_env: Organisation,
    capsys: pytest.CaptureFixture[str],
    depth: Callable[[str], Any],
    given: str,
) -> None:
    """GIVEN --max-concurrency 0, 0%, 1001 or 150% WHEN publishing THEN exit 2 and one line
    saying what is allowed; nothing sent."""
    code = publish_invalidation(
        "--accounts", "111111111111", "--param", "paths=/x", "--max-concurrency", given
    )

    err = capsys.readouterr().err
    assert (code, len(err.splitlines())) == (2, 1)
    assert "nor a percentage of the request's targets (1%-100%)" in err
    assert depth(aws_env.queue_url) == (0, 0)


def test_max_errors_that_is_neither_a_count_nor_a_percentage_is_a_usage_error(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str], depth: Callable[[str], Any]
) -> None:
    """GIVEN --max-errors lots WHEN publishing THEN exit 2, one line, nothing sent."""
    code = publish_invalidation(
        "--accounts", "111111111111", "--param", "paths=/x", "--max-errors", "lots"
    )

    err = capsys.readouterr().err
    assert (code, len(err.splitlines())) == (2, 1)
    assert "--max-errors" in err
    assert depth(aws_env.queue_url) == (0, 0)


def test_an_account_outside_allowed_account_ids_is_refused_unless_forced(
    aws_env: Organisation,
    capsys: pytest.CaptureFixture[str],
    depth: Callable[[str], Any],
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN ALLOWED_ACCOUNT_IDS naming the emulator's two target accounts
    WHEN a task for one of them and 999999999999 is published, then again with --force
    THEN the first is refused (exit 2, one line naming the account and --force, nothing sent)
    and the forced one is sent."""
    args = (
        "--accounts",
        "111111111111,999999999999",
        "--param",
        "paths=/x",
        "--target-param",
        f"999999999999:distribution_id={DISTRIBUTION}",
    )

    refused = publish_invalidation(*args)
    err = capsys.readouterr().err
    queued = depth(aws_env.queue_url)
    forced = publish_invalidation(*args, "--force")

    assert (refused, len(err.splitlines()), queued) == (2, 1, (0, 0))
    assert "999999999999" in err
    assert "ALLOWED_ACCOUNT_IDS" in err
    assert "--force" in err
    assert "111111111111," not in err  # only the refused account is named
    assert forced == 0
    assert len(read_queue(aws_env.queue_url)) == 1


def test_an_sqs_event_file_gets_a_hint_instead_of_a_schema_error(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str], depth: Callable[[str], Any]
) -> None:
    """GIVEN events/sqs-cloudfront-invalidate.json (an event for sam local invoke)
    WHEN it is published with --file
    THEN exit 2 with one line saying it is an SQS event and how to take a body out of it."""
    event = ROOT / "events" / "sqs-cloudfront-invalidate.json"

    code = main(["publish", "--file", str(event)])

    err = capsys.readouterr().err
    assert (code, len(err.splitlines())) == (2, 1)
    assert "is an SQS event for sam local invoke, not a message body" in err
    assert f"jq -r '.Records[0].body' {event} | fanout publish --file -" in err
    assert "must contain" not in err
    assert depth(aws_env.queue_url) == (0, 0)
