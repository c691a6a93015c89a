"""The proxy of the fault suite and the benchmarks, in front of the emulator.

One module serves both: what the fault suite relies on (rules, per-account counts, AssumeRole
accounts learnt on the way) and what the benchmarks rely on (token-bucket quotas answered with
the service's throttling error, counts by outcome, the admin routes a host process serves).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fanout.emulator import FAKE_CREDENTIALS, Emulator, Organisation
from fanout.emulator.proxy import ADMIN_PREFIX, Proxy, Quota, lose_response, throttle, where

pytestmark = pytest.mark.integration

NO_RETRIES = Config(retries={"total_max_attempts": 1})


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[Proxy]:
    def admin(method: str, route: str, body: bytes) -> Any:
        return {"route": route, "method": method} if route == "echo" else None

    with Proxy(emulator.endpoint_url, admin=admin, keep_alive=True) as running:
        yield running


def ops_client(proxy: Proxy, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=proxy.url,
        region_name="us-east-1",
        config=NO_RETRIES,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
    )


def admin(proxy: Proxy, route: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the local proxy's http URL
        f"{proxy.url}{ADMIN_PREFIX}{route}",
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def test_a_quota_throttles_past_its_burst_with_the_services_own_error(proxy: Proxy) -> None:
    """GIVEN a quota of 2 per second with a burst of 2 on sqs:ListQueues (set through the admin
    route, as the benchmark host does)
    WHEN three calls follow at once
    THEN two succeed and the third is ThrottlingException, and the stats say so by outcome."""
    admin(proxy, "reset", {"quotas": {"sqs:ListQueues": [0.001, 2]}})
    sqs = ops_client(proxy, "sqs")

    sqs.list_queues()
    sqs.list_queues()
    with pytest.raises(ClientError) as caught:
        sqs.list_queues()

    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    calls = {(c["operation"], c["outcome"]): c["count"] for c in admin(proxy, "stats")["calls"]}
    assert calls == {("ListQueues", "ok"): 2, ("ListQueues", "throttled"): 1}
    assert admin(proxy, "stats")["quotas"] == {"sqs:ListQueues": [0.001, 2]}


def test_a_query_service_is_throttled_in_xml_as_botocore_expects(proxy: Proxy) -> None:
    """GIVEN a quota of burst 0 on sts:GetCallerIdentity WHEN it is called
    THEN botocore reads Throttling (the query protocol's code) from the answer."""
    proxy.reset({"sts:GetCallerIdentity": Quota(0.001, 0)})

    with pytest.raises(ClientError) as caught:
        ops_client(proxy, "sts").get_caller_identity()

    assert caught.value.response["Error"]["Code"] == "Throttling"


def test_rules_fire_as_scheduled_and_counts_name_the_assumed_account(
    proxy: Proxy, organisation: Organisation
) -> None:
    """GIVEN a rule that throttles the first CreateInvalidation of one account, and one that
    loses the answer of the next
    WHEN three invalidations are sent through the proxy with that account's role
    THEN the first is throttled (not run), the second ran but its caller saw a 503, the third
    succeeds; the counts are by the role's account, learnt from AssumeRole."""
    account = organisation.account_ids[0]
    distribution = organisation.target(account).distribution_ids[0]
    proxy.add(
        throttle("first", where(operations=["CreateInvalidation"], accounts=[account]), times=1),
        # Rules are asked in order: this one sees only what the first let through.
        lose_response("second", where(operations=["CreateInvalidation"]), times=1),
    )
    sts = ops_client(proxy, "sts")
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{organisation.role_name}",
        RoleSessionName="proxy-test",
    )["Credentials"]
    cloudfront = boto3.client(
        "cloudfront",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        config=NO_RETRIES,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    codes = []
    for n in range(3):
        try:
            cloudfront.create_invalidation(
                DistributionId=distribution,
                InvalidationBatch={
                    "CallerReference": f"proxy-test-{n}-{id(proxy)}",
                    "Paths": {"Quantity": 1, "Items": [f"/proxy/{n}"]},
                },
            )
            codes.append("ok")
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])

    assert codes == ["Throttling", "ServiceUnavailable", "ok"]
    assert (proxy.fired("first"), proxy.fired("second")) == (1, 1)
    assert proxy.count("CreateInvalidation", account) == 3
    assert proxy.count("CreateInvalidation", account, what="succeeded") == 1
    assert proxy.count("AssumeRole", account) == 1


def test_other_admin_routes_go_to_the_hosts_hook(proxy: Proxy) -> None:
    """GIVEN a proxy with an admin hook WHEN GET /_proxy/echo THEN the hook answers."""
    assert admin(proxy, "echo") == {"route": "echo", "method": "GET"}
