"""``fanout status``: the per-target state of a request, read from the ledger the worker wrote.

Every test publishes with ``fanout publish``, runs the real handler with ``fanout poll`` (or the
local poller) and then asks ``fanout status``, against the moto server and the seeded ledger
table (``LEDGER_TABLE`` in ``aws_env``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from fanout.cli import main
from fanout.emulator import Organisation
from fanout.poller import Handler, Poller
from tasks.registry import task_names

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

MISSING_DISTRIBUTION = "E0NOSUCHDIST00"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def new_request_id() -> str:
    return f"status-{uuid.uuid4().hex[:12]}"


def publish(capsys: pytest.CaptureFixture[str], task: str, *args: str) -> str:
    """``fanout publish TASK ...`` with a fresh request id; returns its stdout."""
    code, out, err = cli(capsys, "publish", task, "--request-id", new_request_id(), *args)
    assert code == 0, err
    return out


def request_id_of(publish_output: str) -> str:
    [line] = [line for line in publish_output.splitlines() if line.startswith("request id:")]
    return line.removeprefix("request id:").strip()


def poll(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "poll", "--until-empty", "--time-limit", "30")
    assert code == 0, out + err


def status_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(capsys, "status", *argv, "--output", "json")
    assert out, err
    return code, json.loads(out)


def invalidate_everywhere(org: Organisation, capsys: pytest.CaptureFixture[str]) -> str:
    """An invalidation of each target account's first distribution; returns publish's output."""
    return publish(
        capsys,
        "cloudfront.invalidate",
        "--accounts",
        ",".join(org.account_ids),
        "--param",
        f"paths=/status/{uuid.uuid4().hex}.html",
        *[
            arg
            for t in org.targets
            for arg in ("--target-param", f"{t.account}:distribution_id={t.distribution_ids[0]}")
        ],
    )


def test_the_printed_status_command_shows_each_invalidation_succeeded(
    org: Organisation, worker: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN an invalidation published for both target accounts and polled until the queue
    is empty
    WHEN the exact ``fanout status`` command that publish printed is run
    THEN it exits 0 with one succeeded row per account, whose result id is an invalidation that
    exists on that account's distribution."""
    published = invalidate_everywhere(org, capsys)
    [follow] = [line for line in published.splitlines() if line.startswith("follow it:")]
    command = shlex.split(follow.removeprefix("follow it:"))
    poll(capsys)

    assert command[:2] == ["fanout", "status"]
    code, report = status_json(capsys, *command[2:])

    assert code == 0
    rows = report["targets"]
    assert [(r["account"], r["task"], r["state"]) for r in rows] == [
        (a, "cloudfront.invalidate", "succeeded") for a in org.account_ids
    ]
    for row, target in zip(rows, org.targets, strict=True):
        cloudfront = org.target_session(target.account).client(
            "cloudfront", endpoint_url=org.endpoint_url
        )
        invalidation = cloudfront.get_invalidation(
            DistributionId=target.distribution_ids[0], Id=row["result_id"]
        )
        assert invalidation["Invalidation"]["Id"] == row["result_id"]


def send_uptime(org: Organisation, capsys: pytest.CaptureFixture[str]) -> str:
    return request_id_of(
        publish(
            capsys,
            "ssm.send_command",
            "--accounts",
            ",".join(org.account_ids),
            "--param",
            "document_name=AWS-RunShellScript",
            "--param",
            'parameters={"commands": ["uptime"]}',
            *[
                arg
                for t in org.targets
                for arg in (
                    "--target-param",
                    f"{t.account}:instance_ids={json.dumps(t.instance_ids)}",
                )
            ],
        )
    )


def test_status_shows_the_ssm_command_of_each_account(
    org: Organisation, worker: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN an ssm.send_command published for both target accounts and polled
    WHEN ``fanout status`` runs
    THEN it exits 0 and each account's row carries the id of a command sent in that account."""
    request_id = send_uptime(org, capsys)
    poll(capsys)

    code, report = status_json(capsys, request_id)

    assert code == 0
    for row, account in zip(report["targets"], org.account_ids, strict=True):
        assert (row["account"], row["state"]) == (account, "succeeded")
        ssm = org.target_session(account).client("ssm", endpoint_url=org.endpoint_url)
        [command] = ssm.list_commands(CommandId=row["result_id"])["Commands"]
        assert command["DocumentName"] == "AWS-RunShellScript"


def test_refresh_shows_the_cloudfront_status_of_each_invalidation(
    org: Organisation, worker: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN invalidations that succeeded in both target accounts
    WHEN ``fanout status --refresh`` runs (table output)
    THEN a "remote status" column shows CloudFront's "Completed" for each account, asked
    through the target role, and the exit code is 0."""
    request_id = request_id_of(invalidate_everywhere(org, capsys))
    poll(capsys)

    code, out, err = cli(capsys, "status", request_id, "--refresh")

    assert code == 0, err
    lines = out.splitlines()
    assert "remote status" in lines[0]
    for account in org.account_ids:
        [row] = [line for line in lines if line.startswith(account)]
        assert "Completed" in row.split()


def test_refresh_shows_the_ssm_command_status(
    org: Organisation, worker: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN commands that succeeded in both target accounts
    WHEN ``fanout status --refresh --output json`` runs
    THEN each row's remote status is SSM's "Success"."""
    request_id = send_uptime(org, capsys)
    poll(capsys)

    code, report = status_json(capsys, request_id, "--refresh")

    assert code == 0
    assert [r["remote_status"] for r in report["targets"]] == ["Success", "Success"]


def test_some_failed_targets_exit_1_and_are_named_on_stderr(
    org: Organisation, worker: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN an invalidation whose second account names a distribution that does not exist
    WHEN it has been polled and ``fanout status`` runs
    THEN the exit code is 1, the first account succeeded, the second failed with the
    CloudFront error as its last error, and stderr names the failed target."""
    first, second = org.targets
    request_id = request_id_of(
        publish(
            capsys,
            "cloudfront.invalidate",
            "--accounts",
            f"{first.account},{second.account}",
            "--param",
            "paths=/failing.html",
            "--target-param",
            f"{first.account}:distribution_id={first.distribution_ids[0]}",
            "--target-param",
            f"{second.account}:distribution_id={MISSING_DISTRIBUTION}",
        )
    )
    poll(capsys)

    code = main(["status", request_id, "--output", "json"])
    out, err = capsys.readouterr()

    assert code == 1
    states = {r["account"]: (r["state"], r["last_error"]) for r in json.loads(out)["targets"]}
    assert states[first.account] == ("succeeded", None)
    assert states[second.account][0] == "failed"
    assert "NoSuchDistribution" in states[second.account][1]
    assert f"1 failed: {second.account}/{org.region}" in err


def test_the_table_shows_the_last_error_whole(
    org: Organisation,
    worker: Handler,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GIVEN a target that failed with CloudFront's error
    WHEN ``fanout status`` prints its table to a pipe, then on a 100-column terminal width
    THEN the pipe gets the error class and message whole on the row, and the 100 columns get
    every word of it wrapped, nothing cut."""
    target = org.targets[0]
    request_id = request_id_of(
        publish(
            capsys,
            "cloudfront.invalidate",
            "--accounts",
            target.account,
            "--param",
            "paths=/failing.html",
            "--target-param",
            f"{target.account}:distribution_id={MISSING_DISTRIBUTION}",
        )
    )
    poll(capsys)
    _, report = status_json(capsys, request_id)
    [row] = report["targets"]
    error = " ".join(f"{row['error_class']}: {row['last_error']}".split())

    piped_code, piped, _ = cli(capsys, "status", request_id)
    monkeypatch.setenv("COLUMNS", "100")
    _, narrow, _ = cli(capsys, "status", request_id)

    assert piped_code == 1
    [line] = [line for line in piped.splitlines() if line.startswith(target.account)]
    assert line.endswith(error)
    lines = narrow.splitlines()
    column = lines[0].index("last error")
    first = next(n for n, line in enumerate(lines) if line.startswith(target.account))
    wrapped = "".join(line[column:] for line in lines[first:] if line.strip())
    assert max(len(line) for line in lines) <= 100
    assert "…" not in narrow
    assert wrapped.replace(" ", "").startswith(error.replace(" ", ""))


def test_an_unknown_request_id_exits_2_with_one_line(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a request id the worker never saw
    WHEN ``fanout status`` runs
    THEN the exit code is 2 and stderr is one ``fanout: error:`` line saying no record exists."""
    code, out, err = cli(capsys, "status", new_request_id())

    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("fanout: error: no record of request ")
    assert "an unknown id, or not picked up by the worker yet" in err


def test_without_a_ledger_table_status_is_a_usage_error(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN neither --table nor LEDGER_TABLE
    WHEN ``fanout status`` runs
    THEN the exit code is 2 and the error says how to name the table."""
    monkeypatch.delenv("LEDGER_TABLE")

    code, _, err = cli(capsys, "status", new_request_id())

    assert code == 2
    assert "--table is required" in err


def test_watch_waits_until_every_target_is_final(
    org: Organisation, worker: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN ``fanout status --watch`` started before the published message was processed
    WHEN the poller then runs the worker
    THEN the watch returns only after both targets succeeded, with exit code 0."""
    request_id = request_id_of(invalidate_everywhere(org, capsys))
    result: dict[str, int] = {}
    watch = threading.Thread(
        target=lambda: result.update(
            code=main(["status", request_id, "--watch", "--interval", "0.2", "--timeout", "60"])
        )
    )
    watch.start()
    try:
        assert watch.is_alive()  # nothing in the ledger yet: it waits
        stats = Poller(org.queue_url, handler=worker).run(until_empty=True, time_limit_s=30)
    finally:
        watch.join(timeout=90)

    assert stats.deleted == 1
    assert result == {"code": 0}
    out = capsys.readouterr().out
    assert out.count("succeeded") >= 2


def test_watch_of_an_unknown_request_gives_up_after_its_timeout(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a request id nothing will ever process
    WHEN ``fanout status --watch --timeout 1`` runs
    THEN it waits (a request not picked up yet is not an error), then stops after the timeout
    with exit code 3 (timed out), saying it waited."""
    request_id = new_request_id()
    code, _, err = cli(
        capsys, "status", request_id, "--watch", "--interval", "0.2", "--timeout", "1"
    )

    assert code == 3
    assert f"no record of request {request_id} in table fanout-ledger after waiting 1 s" in err


# --- the other registered plugins --------------------------------------------------------------

OTHER_PLUGINS = ("lambda.invoke", "wafv2.update_ip_set", "dns.register_instance")


def moto_api(org: Organisation, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the emulator's own API (``/moto-api/...``)."""
    request = urllib.request.Request(  # noqa: S310 - the local emulator's http URL
        f"{org.endpoint_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return json.loads(text) if text else {}


@pytest.fixture
def lambda_answers(org: Organisation) -> Iterator[None]:
    """moto's Docker-less Lambda backend (Invoke echoes the payload); restored afterwards."""
    previous = moto_api(org, "/moto-api/config", {})["lambda"]
    moto_api(org, "/moto-api/config", {"lambda": {"use_docker": False}})
    yield
    moto_api(org, "/moto-api/config", {"lambda": previous})


def _ip_set(org: Organisation, account: str) -> dict[str, str]:
    waf = org.target_session(account).client("wafv2", endpoint_url=org.endpoint_url)
    name = f"status-{uuid.uuid4().hex[:8]}"
    summary = waf.create_ip_set(
        Name=name, Scope="REGIONAL", IPAddressVersion="IPV4", Addresses=["10.0.0.1/32"]
    )["Summary"]
    return {"name": name, "id": summary["Id"], "scope": "REGIONAL"}


def _publish_args(org: Organisation, task: str) -> list[str]:
    """Arguments of ``fanout publish TASK`` that succeed in the first target account."""
    target = org.targets[0]
    if task == "lambda.invoke":
        return ["--param", "function_name=cache-warmer", "--param", 'payload={"warm": true}']
    if task == "wafv2.update_ip_set":
        ip_set = _ip_set(org, target.account)
        return [f"--param={k}={v}" for k, v in ip_set.items()] + ["--param", "add=192.0.2.7"]
    # dns.register_instance: the directory host in the other (allowed) target account.
    return [
        "--param",
        f"instance_id={target.instance_ids[0]}",
        "--param",
        "zone_name=corp.example.com",
        "--param",
        f"directory_account={org.targets[1].account}",
        "--param",
        f"directory_instance_id={org.targets[1].instance_ids[0]}",
    ]


@pytest.mark.skipif(
    not set(OTHER_PLUGINS) <= set(task_names()), reason="the three plugins are not registered"
)
def test_status_shows_the_rows_of_the_other_plugins(
    org: Organisation,
    worker: Handler,
    lambda_answers: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN one request id shared by a lambda.invoke, a wafv2.update_ip_set and a
    dns.register_instance message for the first target account, polled until empty
    WHEN ``fanout status`` runs
    THEN it shows one succeeded row per task, each with a result id, and exits 0."""
    request_id = new_request_id()
    account = org.targets[0].account
    for task in OTHER_PLUGINS:
        code, _, err = cli(
            capsys,
            "publish",
            task,
            "--accounts",
            account,
            "--request-id",
            request_id,
            *_publish_args(org, task),
        )
        assert code == 0, err
    poll(capsys)

    code, report = status_json(capsys, request_id)

    rows = sorted((r["task"], r["account"], r["state"]) for r in report["targets"])
    assert rows == [(task, account, "succeeded") for task in sorted(OTHER_PLUGINS)]
    assert all(r["result_id"] for r in report["targets"])
    assert code == 0


# --- machine-readable output of publish and poll -----------------------------------------------


def test_publish_json_names_the_request_and_the_command_to_follow_it(
    aws_env: Organisation, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN an invalidation for one target account
    WHEN it is published with ``--output json``
    THEN the JSON names its request id, one message with one job, and the
    ``fanout status`` command for that request id."""
    org = aws_env
    request_id = new_request_id()
    target = org.targets[0]

    code = main(
        [
            "publish",
            "cloudfront.invalidate",
            "--accounts",
            target.account,
            "--request-id",
            request_id,
            "--param",
            "paths=/json.html",
            "--target-param",
            f"{target.account}:distribution_id={target.distribution_ids[0]}",
            "--queue-url",
            org.queue_url,
            "--output",
            "json",
        ]
    )
    published = json.loads(capsys.readouterr().out)

    assert code == 0
    assert published["request_ids"] == [request_id]
    assert (published["messages"], published["jobs"]) == (1, 1)
    assert published["follow"] == [f"fanout status {request_id} --watch"]


def test_poll_json_reports_what_the_run_did(
    org: Organisation, worker: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN one published invalidation
    WHEN ``fanout poll --until-empty --output json`` runs
    THEN the JSON counts one batch, one record, one deletion and says the run was ok."""
    invalidate_everywhere(org, capsys)

    code = main(["poll", "--until-empty", "--time-limit", "30", "--output", "json"])
    stats = json.loads(capsys.readouterr().out)

    assert code == 0
    assert (stats["batches"], stats["records"], stats["deleted"], stats["ok"]) == (1, 1, 1, True)


def test_poll_json_is_the_only_thing_on_stdout_the_worker_logs_go_to_stderr(
    aws_env: Organisation, sqs: SQSClient
) -> None:
    """GIVEN a message that is not JSON (the worker logs an error as it dead-letters it)
    WHEN ``fanout poll --until-empty -o json`` runs as a command (a fresh process)
    THEN stdout parses as one JSON document (``| python -m json.tool`` works) and the
    worker's JSON log line is on stderr."""
    sqs.send_message(QueueUrl=aws_env.queue_url, MessageBody="not json {")

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanout",
            "poll",
            "--until-empty",
            "--time-limit",
            "30",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=dict(os.environ),
        check=False,
    )

    stats = json.loads(result.stdout)
    assert (result.returncode, stats["records"], stats["deleted"]) == (0, 1, 1), result.stderr
    assert "dead-lettering message" in result.stderr
