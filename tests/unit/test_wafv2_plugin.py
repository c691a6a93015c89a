"""tasks.wafv2: CIDR normalisation, the set arithmetic, lock-token retries and the WAF limits."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber

from handler.app import lambda_handler
from handler.exceptions import InvalidParamsError, TaskFailedError, TransientError
from handler.policy import session_policy
from tasks.base import Call, TaskResult
from tasks.registry import get_task
from tasks.wafv2 import LOCK_ATTEMPTS, MAX_ADDRESSES, apply_changes, normalise, parse_cidr
from tests.unit.fakes import (
    TARGET_ACCOUNTS,
    ApiCalls,
    FakeLambdaContext,
    client_in,
    dead_letters,
    one_job_call,
    sqs_event,
    sqs_record,
    v1_body,
)

ACCOUNT = TARGET_ACCOUNTS[0]
REGION = "us-east-1"
SET_ID = "a1b2c3d4-5678-90ab-cdef-111111111111"
TASK = get_task("wafv2.update_ip_set")


class FakeContext:
    """A TaskContext returning one client, recording the region each client was asked for."""

    def __init__(self, client: Any, region: str = REGION) -> None:
        self._client = client
        self.account = ACCOUNT
        self.region = region
        self.regions: list[str | None] = []

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        self.regions.append(region)
        return self._client


def make_call(params: Mapping[str, Any], *, region: str = REGION) -> Call:
    return one_job_call(
        "wafv2.update_ip_set", params, account=ACCOUNT, region=region, request_id="block-1"
    )


def create_ip_set(
    addresses: list[str],
    *,
    version: str = "IPV4",
    account: str = ACCOUNT,
    name: str = "blocked",
    description: str = "managed by fanout",
) -> dict[str, Any]:
    """An IP set in moto; returns the params naming it."""
    summary = client_in(account, "wafv2").create_ip_set(
        Name=name,
        Scope="REGIONAL",
        IPAddressVersion=version,
        Addresses=addresses,
        Description=description,
    )["Summary"]
    return {"name": name, "id": summary["Id"], "scope": "REGIONAL"}


def read_ip_set(ref: Mapping[str, Any], account: str = ACCOUNT) -> dict[str, Any]:
    response = client_in(account, "wafv2").get_ip_set(
        Name=ref["name"], Scope=ref["scope"], Id=ref["id"]
    )
    return {**response["IPSet"], "LockToken": response["LockToken"]}


def run_in_moto(params: Mapping[str, Any], client: Any | None = None) -> TaskResult:
    return TASK.run(FakeContext(client or client_in(ACCOUNT, "wafv2")), make_call(params))


# --- CIDRs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("192.0.2.7", "192.0.2.7/32"),
        ("192.0.2.0/24", "192.0.2.0/24"),
        ("2001:DB8:0:0::1", "2001:db8::1/128"),
        ("2001:db8::/32", "2001:db8::/32"),
    ],
)
def test_addresses_and_cidrs_are_normalised(given: str, canonical: str) -> None:
    """GIVEN an address or CIDR in any valid spelling
    WHEN it is normalised
    THEN it becomes canonical CIDR text (bare addresses are /32 or /128)."""
    assert list(normalise([given])) == [canonical]


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("192.0.2.7/24", "did you mean 192.0.2.0/24"),
        ("0.0.0.0/0", "/0"),
        ("::/0", "/0"),
        ("300.1.1.1", "not an IP address"),
        ("10.0.0.1/33", "not an IP address"),
    ],
)
def test_invalid_cidrs_are_refused_with_a_reason(given: str, reason: str) -> None:
    """GIVEN a CIDR with host bits set, a /0 range, or no address at all
    WHEN it is parsed
    THEN InvalidParamsError explains what is wrong."""
    with pytest.raises(InvalidParamsError, match=reason):
        parse_cidr(given)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "at least one"),
        ({"add": [], "remove": []}, "at least one"),
        ({"add": ["10.0.0.1"], "remove": ["10.0.0.1/32"]}, "both add and remove"),
        ({"add": ["10.0.0.1"], "remove": ["2001:db8::1"]}, "mix IPv4 and IPv6"),
        ({"add": ["10.0.0.1/8"]}, "host bits"),
    ],
    ids=["nothing", "both-empty", "in-add-and-remove", "mixed-versions", "host-bits"],
)
def test_check_refuses_params_that_cannot_be_applied(params: dict[str, Any], reason: str) -> None:
    """GIVEN params with no change, a contradiction, mixed versions or a bad CIDR
    WHEN the plugin checks them
    THEN InvalidParamsError gives a one-line reason."""
    with pytest.raises(InvalidParamsError, match=reason):
        TASK.check(
            {"name": "n", "id": SET_ID, "scope": "REGIONAL", **params},
            account=ACCOUNT,
            region="us-east-1",
        )


def test_apply_changes_is_a_union_and_difference_that_keeps_the_sets_spellings() -> None:
    """GIVEN a set holding 10.0.0.1/32 and 10.1.0.0/16
    WHEN 10.0.0.1/32 (present) and 10.2.0.0/16 are added and 10.1.0.0/16 and 10.9.9.9/32
    (absent) removed
    THEN only 10.2.0.0/16 counts as added and 10.1.0.0/16 as removed."""
    new, added, removed = apply_changes(
        ["10.0.0.1/32", "10.1.0.0/16"],
        add=["10.0.0.1/32", "10.2.0.0/16"],
        remove=["10.1.0.0/16", "10.9.9.9/32"],
    )

    assert (new, added, removed) == (["10.0.0.1/32", "10.2.0.0/16"], 1, 1)


def test_apply_changes_recognises_another_spelling_of_a_present_address() -> None:
    """GIVEN a set holding 2001:DB8::1/128 (upper case)
    WHEN 2001:db8::1/128 is added
    THEN nothing changes (the same address, spelled differently)."""
    assert apply_changes(["2001:DB8::1/128"], add=["2001:db8::1/128"], remove=[]) == (
        ["2001:DB8::1/128"],
        0,
        0,
    )


# --- run against moto --------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_adds_and_removes_cidrs_and_returns_the_new_lock_token() -> None:
    """GIVEN an IPv4 set holding 10.0.0.1/32 and 10.1.0.0/16
    WHEN 192.0.2.7 is added and 10.1.0.0/16 removed
    THEN the set holds 10.0.0.1/32 and 192.0.2.7/32, keeps its description, and the result
    (the set's id) counts one added and one removed with the set's new lock token."""
    ref = create_ip_set(["10.0.0.1/32", "10.1.0.0/16"])

    result = run_in_moto({**ref, "add": ["192.0.2.7"], "remove": ["10.1.0.0/16"]})

    after = read_ip_set(ref)
    assert sorted(after["Addresses"]) == ["10.0.0.1/32", "192.0.2.7/32"]
    assert after["Description"] == "managed by fanout"
    assert result.resource_id == ref["id"]
    assert (result.detail["added"], result.detail["removed"]) == (1, 1)
    assert result.detail["lock_token"] == after["LockToken"]


@pytest.mark.usefixtures("aws")
def test_a_change_already_applied_does_not_update_the_set(api_calls: ApiCalls) -> None:
    """GIVEN a set that already holds 192.0.2.7/32 and not 10.1.0.0/16
    WHEN 192.0.2.7 is added and 10.1.0.0/16 removed again (a redelivery)
    THEN the plugin succeeds without calling UpdateIPSet, and the lock token is unchanged."""
    ref = create_ip_set(["192.0.2.7/32"])
    before = read_ip_set(ref)
    api_calls.calls.clear()

    result = run_in_moto({**ref, "add": ["192.0.2.7"], "remove": ["10.1.0.0/16"]})

    assert api_calls.count("GetIPSet") == 1
    assert api_calls.count("UpdateIPSet") == 0
    assert (result.detail["added"], result.detail["removed"]) == (0, 0)
    assert read_ip_set(ref)["LockToken"] == before["LockToken"]


@pytest.mark.usefixtures("aws")
def test_a_concurrent_writer_makes_the_plugin_reread_and_keep_both_changes() -> None:
    """GIVEN another writer updates the set between the plugin's GetIPSet and its UpdateIPSet
    WHEN the plugin's update fails with WAFOptimisticLockException (real lock token mismatch)
    THEN it reads the set again and applies its change on top: both changes are kept."""
    ref = create_ip_set(["10.0.0.1/32"])
    client = client_in(ACCOUNT, "wafv2")
    other = client_in(ACCOUNT, "wafv2")
    interfered: list[bool] = []

    def concurrent_write(**_: Any) -> None:
        if not interfered:
            interfered.append(True)
            current = read_ip_set(ref)
            other.update_ip_set(
                Name=ref["name"],
                Scope="REGIONAL",
                Id=ref["id"],
                Addresses=[*current["Addresses"], "203.0.113.9/32"],
                LockToken=current["LockToken"],
            )

    client.meta.events.register("before-call.wafv2.UpdateIPSet", concurrent_write)

    run_in_moto({**ref, "add": ["192.0.2.7"]}, client)

    assert interfered == [True]
    assert sorted(read_ip_set(ref)["Addresses"]) == [
        "10.0.0.1/32",
        "192.0.2.7/32",
        "203.0.113.9/32",
    ]


@pytest.mark.usefixtures("aws", "no_sleep")
def test_lock_conflicts_that_never_end_are_retryable_after_a_bounded_number_of_reads(
    api_calls: ApiCalls, fail_operation: Callable[..., None]
) -> None:
    """GIVEN UpdateIPSet always fails with WAFOptimisticLockException
    WHEN the plugin runs
    THEN it reads the set LOCK_ATTEMPTS times, then raises TransientError (retry later)."""
    ref = create_ip_set(["10.0.0.1/32"])
    fail_operation("UpdateIPSet", "WAFOptimisticLockException")
    api_calls.calls.clear()

    with pytest.raises(TransientError, match="WAFOptimisticLockException"):
        run_in_moto({**ref, "add": ["192.0.2.7"]})

    assert api_calls.count("GetIPSet") == LOCK_ATTEMPTS
    assert read_ip_set(ref)["Addresses"] == ["10.0.0.1/32"]


@pytest.mark.usefixtures("aws")
def test_an_address_of_the_other_ip_version_is_a_permanent_error(api_calls: ApiCalls) -> None:
    """GIVEN an IPv4 set
    WHEN an IPv6 CIDR is added
    THEN InvalidParamsError names the set's version, and the set is not updated."""
    ref = create_ip_set(["10.0.0.1/32"])

    with pytest.raises(InvalidParamsError, match="IPV4"):
        run_in_moto({**ref, "add": ["2001:db8::/32"]})

    assert api_calls.count("UpdateIPSet") == 0


@pytest.mark.usefixtures("aws")
def test_exceeding_the_ip_set_limit_is_a_permanent_error(api_calls: ApiCalls) -> None:
    """GIVEN a set one address short of WAF's limit
    WHEN two new addresses are added
    THEN TaskFailedError names the limit, and the set is not updated."""
    full = [f"10.{n // 256}.{n % 256}.0/24" for n in range(MAX_ADDRESSES - 1)]
    ref = create_ip_set(full)

    with pytest.raises(TaskFailedError, match=str(MAX_ADDRESSES)):
        run_in_moto({**ref, "add": ["192.0.2.1", "192.0.2.2"]})

    assert api_calls.count("UpdateIPSet") == 0


@pytest.mark.usefixtures("aws")
def test_a_missing_ip_set_fails_the_call_with_wafs_error() -> None:
    """GIVEN no IP set with that name and id
    WHEN the plugin runs
    THEN GetIPSet's WAFNonexistentItemException reaches the worker as it came."""
    client = client_in(ACCOUNT, "wafv2")

    with pytest.raises(client.exceptions.WAFNonexistentItemException):
        run_in_moto({"name": "nope", "id": SET_ID, "scope": "REGIONAL", "add": ["10.0.0.1"]})


# --- the exact request (Stubber) and the CLOUDFRONT scope --------------------------------------


@pytest.fixture
def waf() -> Iterator[tuple[Any, Stubber]]:
    client = botocore.session.get_session().create_client(
        "wafv2", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_update_sends_the_whole_list_with_the_lock_token_and_description(
    waf: tuple[Any, Stubber],
) -> None:
    """GIVEN GetIPSet returns a set with a description and lock token T1
    WHEN the plugin adds an address
    THEN UpdateIPSet carries the full new list, LockToken T1 and the same description."""
    client, stubber = waf
    ident = {"Name": "blocked", "Scope": "CLOUDFRONT", "Id": SET_ID}
    stubber.add_response(
        "get_ip_set",
        {
            "IPSet": {
                "Name": "blocked",
                "Id": SET_ID,
                "ARN": f"arn:aws:wafv2:us-east-1:{ACCOUNT}:global/ipset/blocked/{SET_ID}",
                "IPAddressVersion": "IPV4",
                "Addresses": ["10.0.0.1/32"],
                "Description": "scanners",
            },
            "LockToken": "T1",
        },
        expected_params=ident,
    )
    stubber.add_response(
        "update_ip_set",
        {"NextLockToken": "T2"},
        expected_params={
            **ident,
            "Addresses": ["10.0.0.1/32", "192.0.2.7/32"],
            "LockToken": "T1",
            "Description": "scanners",
        },
    )
    ctx = FakeContext(client, region="eu-west-1")

    result = TASK.run(
        ctx,
        make_call(
            {"name": "blocked", "id": SET_ID, "scope": "CLOUDFRONT", "add": ["192.0.2.7"]},
            region="eu-west-1",
        ),
    )

    assert result.detail["lock_token"] == "T2"
    assert ctx.regions == ["us-east-1"]  # CLOUDFRONT scope: the API lives in us-east-1


def test_cloudfront_scope_shares_the_us_east_1_quota_and_regional_scope_its_region() -> None:
    """GIVEN calls for a CLOUDFRONT and a REGIONAL set from a target in eu-west-1
    WHEN their rate keys are computed
    THEN the CLOUDFRONT call counts against us-east-1, the REGIONAL one against eu-west-1."""
    base = {"name": "n", "id": SET_ID, "add": ["10.0.0.1"]}

    cloudfront = TASK.rate_key(make_call({**base, "scope": "CLOUDFRONT"}, region="eu-west-1"))
    regional = TASK.rate_key(make_call({**base, "scope": "REGIONAL"}, region="eu-west-1"))

    assert cloudfront == (ACCOUNT, "us-east-1", "wafv2:UpdateIPSet")
    assert regional == (ACCOUNT, "eu-west-1", "wafv2:UpdateIPSet")


def test_cloudfront_scope_outside_the_aws_partition_is_refused_before_any_call() -> None:
    """GIVEN a CLOUDFRONT-scope call for a target in cn-north-1 (WAF there is regional only)
    WHEN the plugin runs
    THEN InvalidParamsError is raised and no client is requested."""
    ctx = FakeContext(client=None, region="cn-north-1")
    params = {"name": "n", "id": SET_ID, "scope": "CLOUDFRONT", "add": ["10.0.0.1"]}

    with pytest.raises(InvalidParamsError, match="CLOUDFRONT"):
        TASK.run(ctx, make_call(params, region="cn-north-1"))

    assert ctx.regions == []


def test_session_policy_names_only_the_ip_set_of_the_call() -> None:
    """GIVEN a REGIONAL and a CLOUDFRONT call
    WHEN their resource-scoped session policies are built
    THEN each allows Get/UpdateIPSet only on that set's ARN (regional/... or global/...)."""
    for scope, arn_scope in (("REGIONAL", "regional"), ("CLOUDFRONT", "global")):
        params = {"name": "blocked", "id": SET_ID, "scope": scope}

        policy = session_policy(TASK, "aws", ACCOUNT, params=params)

        assert f'"arn:aws:wafv2:*:{ACCOUNT}:{arn_scope}/ipset/blocked/{SET_ID}"' in policy
        assert "*/ipset/*/*" not in policy


# --- through the handler -----------------------------------------------------------------------


@pytest.mark.usefixtures("worker_env")
def test_the_handler_updates_the_set_in_each_target_account(context: FakeLambdaContext) -> None:
    """GIVEN an IP set in two accounts and one message adding a CIDR to both
    WHEN the handler processes it
    THEN each account's set holds the CIDR, and nothing is retried or dead-lettered."""
    accounts = TARGET_ACCOUNTS[:2]
    refs = {a: create_ip_set(["10.0.0.1/32"], account=a) for a in accounts}
    body = v1_body(
        "wafv2.update_ip_set",
        [{"account": a, "params": {"id": refs[a]["id"]}} for a in accounts],
        params={"name": "blocked", "scope": "REGIONAL", "add": ["198.51.100.0/24"]},
    )

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert response["batchItemFailures"] == []
    assert dead_letters() == []
    for account in accounts:
        addresses = read_ip_set(refs[account], account)["Addresses"]
        assert sorted(addresses) == ["10.0.0.1/32", "198.51.100.0/24"]
