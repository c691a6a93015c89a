"""Stop conditions against the emulator: a request's CloudWatch alarm, set to ALARM mid-request."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest

from fanout.cli import main
from fanout.emulator import Organisation
from fanout.poller import Handler
from fanout.status import Outcome, ledger_for, read_status
from handler import alarms as alarms_module
from tests.integration.test_end_to_end import invalidated_paths
from tests.integration.test_selection import deliver

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration


def set_alarm(org: Organisation, name: str, state: str) -> None:
    cloudwatch = org.ops_session().client("cloudwatch", endpoint_url=org.endpoint_url)
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        MetricName="5XXError",
        Namespace="AWS/CloudFront",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="integration test")


def test_an_alarm_going_off_mid_request_leaves_every_later_target_not_run(
    aws_env: Organisation,
    sqs: SQSClient,
    worker: Handler,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN a request published with --alarms in one message per target (2 targets)
    WHEN the first message runs while the alarm is OK, then the alarm goes to ALARM
    THEN the second target ends "not run: request stopped: alarm <name>" with no invalidation,
    and the request ends stopped with the alarm's name."""
    monkeypatch.setattr(alarms_module, "CACHE_SECONDS", 0.0)  # read at each batch
    alarm = f"fanout-it-{uuid.uuid4().hex[:6]}"
    set_alarm(aws_env, alarm, "OK")
    first, second = aws_env.targets[:2]
    request_id = f"alarm-{uuid.uuid4().hex[:8]}"
    path = f"/alarm/{request_id}.html"
    code = main(
        [
            "publish",
            "cloudfront.invalidate",
            "--accounts",
            f"{first.account},{second.account}",
            "--param",
            f"paths={path}",
            "--target-param",
            f"{first.account}:distribution_id={first.distribution_ids[0]}",
            "--target-param",
            f"{second.account}:distribution_id={second.distribution_ids[0]}",
            "--max-targets",
            "1",
            "--alarms",
            alarm,
            "--request-id",
            request_id,
        ]
    )
    capsys.readouterr()
    assert code == 0
    messages = sqs.receive_message(
        QueueUrl=aws_env.queue_url,
        MaxNumberOfMessages=2,
        VisibilityTimeout=60,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )["Messages"]
    by_part = {json.loads(m["Body"])["request"]["part"]: m for m in messages}

    deliver(worker, aws_env, by_part[1])
    set_alarm(aws_env, alarm, "ALARM")
    deliver(worker, aws_env, by_part[2])

    # (the seeded distributions are shared with other tests: only this test's path matters)
    assert path in invalidated_paths(aws_env, first.account, first.distribution_ids[0])
    assert path not in invalidated_paths(aws_env, second.account, second.distribution_ids[0])
    report = read_status(ledger_for(aws_env.ledger_table or "", region=aws_env.region), request_id)
    assert report.state == "stopped"
    assert report.request is not None
    assert report.request.stop_reason == f"alarm {alarm}"
    [not_run] = report.of(Outcome.FAILED)
    assert not_run.record.account == second.account
    assert not_run.record.last_error == f"not run: request stopped: alarm {alarm}"
