"""Requests as first-class objects, end to end through the CLI, the real handler (in its
killable environment) and the emulator: a truthful status, request-wide limits, cancel, the
completion event and the results export (issue 11)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from fanout.cli import main
from fanout.emulator import Organisation, capture_events

pytestmark = pytest.mark.integration

THIRD = "333333333333"  # allowed too, with nothing seeded: SSM accepts any instance id there
MISSING = "EMISSING00000001"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def instance() -> str:
    return f"i-{uuid.uuid4().hex[:17]}"


@pytest.fixture
def accounts(aws_env: Organisation, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str]:
    a, b = aws_env.account_ids
    monkeypatch.setenv("ALLOWED_ACCOUNT_IDS", f"{a},{b},{THIRD}")
    return a, b, THIRD


@pytest.fixture
def events(aws_env: Organisation) -> Any:
    """Reads the completion events of one request from a queue subscribed to the bus."""
    assert aws_env.event_bus
    sqs = aws_env.ops_session().client("sqs", endpoint_url=aws_env.endpoint_url)
    url = capture_events(
        aws_env.endpoint_url,
        region=aws_env.region,
        bus=aws_env.event_bus,
        queue_name=f"events-{uuid.uuid4().hex[:10]}",
    )

    def of(request_id: str) -> list[dict[str, Any]]:
        found = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for message in batch:
                event = json.loads(message["Body"])
                if event["detail"]["request_id"] == request_id:
                    found.append(event)
        return found

    return of


def publish_ssm(
    capsys: pytest.CaptureFixture[str], request_id: str, accounts: tuple[str, ...], *extra: str
) -> None:
    target_params = [
        arg for a in accounts for arg in ("--target-param", f'{a}:instance_ids=["{instance()}"]')
    ]
    code, _, err = cli(
        capsys,
        "publish",
        "ssm.send_command",
        "--accounts",
        ",".join(accounts),
        "--param",
        "document_name=AWS-RunShellScript",
        "--param",
        'parameters={"commands": ["uptime"]}',
        *target_params,
        "--request-id",
        request_id,
        *extra,
    )
    assert code == 0, err


def poll(capsys: pytest.CaptureFixture[str], *extra: str) -> None:
    code, out, err = cli(capsys, "poll", "--time-limit", "60", *extra)
    assert code == 0, out + err


def status(
    capsys: pytest.CaptureFixture[str], request_id: str, *extra: str
) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(capsys, "status", request_id, "--output", "json", *extra)
    assert out, err
    return code, json.loads(out)


def test_a_split_request_is_pending_until_its_last_part_ran(
    accounts: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a request over three accounts published as three messages (--max-targets 1)
    WHEN one message has been processed and `fanout status --watch --timeout` runs
    THEN it reports 1 succeeded and 2 pending and exits 3 (timed out, still pending) - not 0;
    WHEN the other two are processed THEN it exits 0 with 3 succeeded.

    Regression: status counted only the targets it had records of ("1 target(s): 1 succeeded,
    0 pending", exit 0) while two had not run."""
    request_id = new_request_id("split")
    publish_ssm(capsys, request_id, accounts, "--max-targets", "1")
    poll(capsys, "--batch-size", "1", "--max-batches", "1")

    code, report = status(capsys, request_id, "--watch", "--timeout", "3", "--interval", "1")

    assert code == 3
    assert (report["summary"]["succeeded"], report["summary"]["pending"]) == (1, 2)
    assert report["summary"]["total"] == 3
    assert report["state"] == "running"

    poll(capsys, "--until-empty")
    code, report = status(capsys, request_id)

    assert code == 0
    assert report["summary"] == {"succeeded": 3, "failed": 0, "pending": 0, "total": 3}
    assert report["state"] == "succeeded"


def test_watch_waits_for_a_request_the_worker_has_not_picked_up_yet(
    accounts: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a request just published, nothing polled yet
    WHEN `fanout status --watch --timeout 2` runs
    THEN it waits (no "unknown request" error: exit 3, still pending), naming why."""
    request_id = new_request_id("unseen")
    publish_ssm(capsys, request_id, accounts[:1])

    code, _, err = cli(capsys, "status", request_id, "--watch", "--timeout", "2", "--interval", "1")

    assert code == 3
    assert "not picked up by the worker yet" in err


def test_a_cancel_mid_request_stops_every_target_not_yet_started(
    aws_env: Organisation,
    accounts: tuple[str, str, str],
    capsys: pytest.CaptureFixture[str],
    events: Any,
) -> None:
    """GIVEN a six-target request in six messages, two of them processed
    WHEN `fanout cancel` runs and the worker drains the queue
    THEN the four others end cancelled without a single SendCommand (counted in the
    emulator), and the one completion event says cancelled with the counts."""
    request_id = new_request_id("cancel")
    publish_ssm(
        capsys, request_id, accounts, "--regions", "us-east-1,us-west-2", "--max-targets", "1"
    )
    poll(capsys, "--batch-size", "1", "--max-batches", "2")

    code, out, err = cli(capsys, "cancel", request_id)
    assert code == 0, err
    assert "cancelling" in out
    poll(capsys, "--until-empty")

    code, report = status(capsys, request_id)
    states = sorted(t["state"] for t in report["targets"])
    assert states == ["cancelled"] * 4 + ["succeeded"] * 2
    assert code == 1
    commands = 0
    for account in accounts:
        for region in ("us-east-1", "us-west-2"):
            ssm = aws_env.target_session(account).client(
                "ssm", region_name=region, endpoint_url=aws_env.endpoint_url
            )
            commands += sum(
                1
                for c in ssm.list_commands()["Commands"]
                if request_id in str(c.get("Comment", ""))
            )
    assert commands == 2
    [event] = events(request_id)
    assert event["detail"]["state"] == "cancelled"
    assert event["detail"]["counts"]["cancelled"] == 4
    assert event["detail"]["counts"]["succeeded"] == 2


def test_a_finished_request_is_announced_once_and_exported(
    aws_env: Organisation,
    accounts: tuple[str, str, str],
    capsys: pytest.CaptureFixture[str],
    events: Any,
) -> None:
    """GIVEN a three-target request
    WHEN the worker runs it to the end
    THEN one "Request Finished" event carries its state and counts (equal to the ledger's),
    and its per-target results are a JSON-lines object in the results bucket, which
    `fanout status` names."""
    request_id = new_request_id("done")
    publish_ssm(capsys, request_id, accounts)
    poll(capsys, "--until-empty")

    [event] = events(request_id)
    code, report = status(capsys, request_id)

    assert code == 0
    assert (event["source"], event["detail-type"]) == ("fanout", "Request Finished")
    assert event["detail"]["state"] == "succeeded"
    assert event["detail"]["counts"]["succeeded"] == report["counts"]["succeeded"] == 3
    assert report["results"] == event["detail"]["results"]
    bucket, key = report["results"].removeprefix("s3://").split("/", 1)
    s3 = aws_env.ops_session().client("s3", endpoint_url=aws_env.endpoint_url)
    lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    assert sorted(json.loads(line)["account"] for line in lines) == sorted(accounts)


def test_targets_refused_before_running_appear_with_their_reason(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a request naming an account outside ALLOWED_ACCOUNT_IDS (published with --force)
    WHEN it has been processed
    THEN `fanout status` shows that target failed, with AccountNotAllowedError and why."""
    request_id = new_request_id("refused")
    publish_ssm(capsys, request_id, ("999999999999",), "--force")
    poll(capsys, "--until-empty")

    code, report = status(capsys, request_id)

    assert code == 1
    [row] = report["targets"]
    assert (row["account"], row["state"], row["error_class"]) == (
        "999999999999",
        "failed",
        "AccountNotAllowedError",
    )
    assert "not in ALLOWED_ACCOUNT_IDS" in row["last_error"]


def test_a_dry_run_is_recorded_per_target(
    accounts: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a dry run over three accounts
    WHEN it has been processed
    THEN each target is recorded as a dry run ("would run"), and status exits 0."""
    request_id = new_request_id("dry")
    publish_ssm(capsys, request_id, accounts, "--dry-run")
    poll(capsys, "--until-empty")

    code, report = status(capsys, request_id)

    assert code == 0
    assert [t["state"] for t in report["targets"]] == ["dry_run"] * 3
    assert all(t["result_id"] == "dry-run" for t in report["targets"])


def test_max_errors_counts_the_whole_request_across_its_messages(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a four-target request in four messages, every target failing, max_errors 1
    WHEN the messages are processed one at a time
    THEN two targets fail and the other two end "not run" with that reason: the limit counts
    the request's failures, whichever message they were in."""
    request_id = new_request_id("maxerr")
    a, b = aws_env.account_ids
    code, _, err = cli(
        capsys,
        "publish",
        "cloudfront.invalidate",
        "--accounts",
        f"{a},{b}",
        "--regions",
        "us-east-1,us-west-2",
        "--param",
        "paths=/x",
        "--param",
        f"distribution_id={MISSING}",
        "--request-id",
        request_id,
        "--max-targets",
        "1",
        "--max-errors",
        "1",
    )
    assert code == 0, err
    poll(capsys, "--until-empty", "--batch-size", "1")

    code, report = status(capsys, request_id)

    states = sorted(t["state"] for t in report["targets"])
    assert states == ["failed", "failed", "not_run", "not_run"]
    not_run = [t for t in report["targets"] if t["state"] == "not_run"]
    assert all("max_errors=1" in t["last_error"] for t in not_run)


def test_re_publishing_a_request_id_is_refused_then_noted(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a request whose target failed
    WHEN the same request id is published again
    THEN publish refuses (exit 2, pointing to redrive or a new request id); with --republish
    it sends, the worker runs nothing again, and status shows the worker's note."""
    request_id = new_request_id("again")
    args = [
        "publish",
        "cloudfront.invalidate",
        "--accounts",
        aws_env.account_ids[0],
        "--param",
        "paths=/x",
        "--param",
        f"distribution_id={MISSING}",
        "--request-id",
        request_id,
    ]
    assert cli(capsys, *args)[0] == 0
    poll(capsys, "--until-empty")

    code, _, err = cli(capsys, *args)
    assert code == 2
    assert "redrive" in err
    assert "new --request-id" in err

    assert cli(capsys, *args, "--republish")[0] == 0
    poll(capsys, "--until-empty")
    _, report = status(capsys, request_id)

    [note] = report["notes"]
    assert "nothing ran again" in note


def test_update_replaces_max_concurrency_and_refuses_a_zero_cap_with_one_line(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a running request's record WHEN `fanout update --max-concurrency 5` (and later 0)
    THEN the record's options say 5, which the worker's view of the request reads; 0 is refused
    with exit 2 and one line, and the record keeps 5."""
    from fanout.status import ledger_for  # noqa: PLC0415
    from handler.envelope import parse_message  # noqa: PLC0415
    from handler.requests import RequestOpen, RequestView  # noqa: PLC0415

    request_id = new_request_id("update")
    source = ledger_for(aws_env.ledger_table or "", region=aws_env.region)
    opening = RequestOpen(request_id, "ssm.send_command", 10, {"max_concurrency": 2}, "AIDAOPS")
    source.requests.count_ended(opening, {})

    code, out, _ = cli(capsys, "update", request_id, "--max-concurrency", "5")
    assert code == 0
    assert "max_concurrency = 5" in out
    record = source.requests.requests([request_id])[request_id]
    body = json.dumps(
        {
            "version": 1,
            "task": "ssm.send_command",
            "request_id": request_id,
            "request": {"targets": 10, "part": 1, "parts": 10},
            "targets": [{"account": THIRD, "params": {"instance_ids": [instance()]}}],
            "params": {"document_name": "AWS-RunShellScript"},
            "options": {"max_concurrency": 2},
        }
    )
    envelope = parse_message(body, message_id="m-1", default_region=aws_env.region)
    assert RequestView(record, envelope).max_concurrency == 5

    code, _, err = cli(capsys, "update", request_id, "--max-concurrency", "0")
    assert (code, len(err.splitlines())) == (2, 1)
    assert "--max-concurrency is a count (1 or more)" in err
    assert source.requests.requests([request_id])[request_id].options["max_concurrency"] == 5
