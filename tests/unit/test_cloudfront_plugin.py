"""tasks.cloudfront: path reduction, coalescing/packing of invalidations, and CreateInvalidation."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import ANY, Stubber
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from tasks.base import Call, Job
from tasks.cloudfront import MAX_PATHS, MAX_WILDCARD_PATHS, is_wildcard, reduce_paths
from tasks.registry import get_task

ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
DIST_A = "E2QWRUHEXAMPLE"
DIST_B = "E1B2C3D4EXAMPLE"


def make_job(
    request_id: str,
    paths: Sequence[str],
    *,
    account: str = ACCOUNT_A,
    distribution_id: str = DIST_A,
    index: int = 0,
    region: str = "us-east-1",
) -> Job:
    return Job(
        key=f"{request_id}/{account}/{distribution_id}/{index}",
        request_id=request_id,
        task="cloudfront.invalidate",
        account=account,
        region=region,
        params={"distribution_id": distribution_id, "paths": list(paths)},
        message_id=f"msg-{request_id}",
        index=index,
    )


def make_call(paths: Sequence[str], *, request_ids: Sequence[str] = ("req-1",)) -> Call:
    """The one call the plugin plans for jobs of these requests on one distribution."""
    jobs = [make_job(r, paths, index=i) for i, r in enumerate(request_ids)]
    [call] = get_task("cloudfront.invalidate").plan(jobs)
    return call


def covered(path: str, by: Sequence[str]) -> bool:
    """CloudFront semantics: a path is invalidated if listed, or a listed wildcard matches it."""
    return path in by or any(is_wildcard(w) and path.startswith(w[:-1]) for w in by)


class FakeContext:
    """A TaskContext whose clients are the ones the test prepared."""

    def __init__(self, client: Any, account: str = ACCOUNT_A, region: str = "us-east-1") -> None:
        self._client = client
        self.account = account
        self.region = region
        self.requested: list[str] = []

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        self.requested.append(service)
        return self._client


# --- reduce_paths ------------------------------------------------------------------------------


def test_reduce_paths_dedupes_and_sorts() -> None:
    """GIVEN unsorted paths with duplicates and no wildcards
    WHEN they are reduced
    THEN the result is sorted and unique."""
    assert reduce_paths(["/b", "/a", "/b", "/c"]) == ["/a", "/b", "/c"]


def test_a_directory_wildcard_covers_files_and_wildcards_below_it() -> None:
    """GIVEN /img/* together with /img/a.jpg and /img/sub/*
    WHEN the paths are reduced
    THEN only /img/* remains of the three."""
    assert reduce_paths(["/img/a.jpg", "/img/sub/*", "/img/*"]) == ["/img/*"]


def test_a_directory_wildcard_does_not_cover_a_sibling_with_the_same_prefix() -> None:
    """GIVEN /img/* and /imgx (not under /img/)
    WHEN the paths are reduced
    THEN /imgx is kept."""
    assert reduce_paths(["/img/*", "/imgx"]) == ["/img/*", "/imgx"]


def test_a_prefix_wildcard_covers_every_path_starting_with_the_prefix() -> None:
    """GIVEN /img* with /imgx and /img/*
    WHEN the paths are reduced
    THEN only /img* remains (CloudFront's '*' matches any suffix)."""
    assert reduce_paths(["/imgx", "/img/*", "/img*"]) == ["/img*"]


def test_root_wildcard_covers_everything() -> None:
    """GIVEN /* among files and other wildcards
    WHEN the paths are reduced
    THEN /* alone remains."""
    assert reduce_paths(["/index.html", "/a/*", "/*", "/z*"]) == ["/*"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["/", "/a", "/a*", "/a/*", "/a/b", "/a/b*", "/ab", "/*", "/b"])))
def test_reduce_paths_keeps_exactly_what_is_needed(paths: list[str]) -> None:
    """GIVEN any list of paths
    WHEN it is reduced
    THEN every input path is still invalidated by the result
    AND the result holds only input paths, none of them covered by another."""
    reduced = reduce_paths(paths)

    assert all(covered(p, reduced) for p in paths)
    assert set(reduced) <= set(paths)
    assert all(not covered(p, [q for q in reduced if q != p]) for p in reduced)


# --- plan: coalescing and packing --------------------------------------------------------------


def test_jobs_for_one_distribution_across_requests_become_one_call() -> None:
    """GIVEN two requests invalidating different paths of the same distribution in one account
    WHEN the plugin plans the batch
    THEN there is one call carrying both jobs and the union of their paths."""
    task = get_task("cloudfront.invalidate")
    first = make_job("req-1", ["/index.html", "/img/*"])
    second = make_job("req-2", ["/img/logo.png", "/about.html"])

    calls = task.plan([first, second])

    assert len(calls) == 1
    (call,) = calls
    assert [j.key for j in call.jobs] == [first.key, second.key]
    assert call.params == {
        "distribution_id": DIST_A,
        "paths": ["/about.html", "/img/*", "/index.html"],
    }
    assert call.request_ids == ("req-1", "req-2")


@pytest.mark.parametrize(
    ("other_account", "other_distribution"),
    [(ACCOUNT_A, DIST_B), (ACCOUNT_B, DIST_A)],
    ids=["other-distribution", "other-account"],
)
def test_jobs_for_different_distributions_or_accounts_stay_separate(
    other_account: str, other_distribution: str
) -> None:
    """GIVEN two jobs that differ in distribution id or in account
    WHEN the plugin plans the batch
    THEN each job gets its own call in its own account and distribution."""
    task = get_task("cloudfront.invalidate")
    first = make_job("req-1", ["/a"])
    second = make_job("req-2", ["/a"], account=other_account, distribution_id=other_distribution)

    calls = task.plan([first, second])

    assert sorted(
        (c.account, c.params["distribution_id"], [j.key for j in c.jobs]) for c in calls
    ) == sorted(
        [(ACCOUNT_A, DIST_A, [first.key]), (other_account, other_distribution, [second.key])]
    )


def test_twenty_distinct_wildcards_are_packed_into_two_calls_within_the_quota() -> None:
    """GIVEN 20 jobs for one distribution, each with one distinct wildcard path
    WHEN the plugin plans the batch
    THEN there are 2 calls, each with at most 15 wildcard paths, together holding every job."""
    task = get_task("cloudfront.invalidate")
    jobs = [make_job(f"req-{n:02}", [f"/dir{n:02}/*"]) for n in range(20)]

    calls = task.plan(jobs)

    assert len(calls) == 2
    assert all(sum(map(is_wildcard, c.params["paths"])) <= MAX_WILDCARD_PATHS for c in calls)
    assert sorted(j.key for c in calls for j in c.jobs) == sorted(j.key for j in jobs)


def test_four_jobs_of_a_thousand_paths_are_packed_into_two_calls_within_the_quota() -> None:
    """GIVEN 4 jobs for one distribution, each with 1000 distinct paths
    WHEN the plugin plans the batch
    THEN there are 2 calls, each with at most 3000 paths, together holding every job."""
    task = get_task("cloudfront.invalidate")
    jobs = [make_job(f"req-{n}", [f"/r{n}/f{i}.html" for i in range(1000)]) for n in range(4)]

    calls = task.plan(jobs)

    assert len(calls) == 2
    assert all(len(c.params["paths"]) <= MAX_PATHS for c in calls)
    assert sorted(j.key for c in calls for j in c.jobs) == sorted(j.key for j in jobs)


job_specs = st.lists(
    st.tuples(
        st.sampled_from([ACCOUNT_A, ACCOUNT_B]),
        st.sampled_from([DIST_A, DIST_B]),
        st.lists(
            st.one_of(
                st.integers(0, 40).map(lambda n: f"/w{n}/*"),
                st.integers(0, 40).map(lambda n: f"/f{n}.html"),
                st.sampled_from(["/*", "/w1*", "/index.html"]),
            ),
            min_size=1,
            max_size=15,
            unique=True,
        ).filter(lambda ps: sum(map(is_wildcard, reduce_paths(ps))) <= MAX_WILDCARD_PATHS),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(job_specs)
def test_plan_puts_every_job_in_exactly_one_call_that_invalidates_its_paths(
    specs: list[tuple[str, str, list[str]]],
) -> None:
    """GIVEN any batch of valid cloudfront jobs over two accounts and two distributions
    WHEN the plugin plans it
    THEN every job is in exactly one call, of its own account and distribution,
    AND that call invalidates every path of the job within CloudFront's quotas."""
    task = get_task("cloudfront.invalidate")
    jobs = [
        make_job(f"req-{i}", paths, account=account, distribution_id=dist)
        for i, (account, dist, paths) in enumerate(specs)
    ]

    calls = task.plan(jobs)

    assert sorted(j.key for c in calls for j in c.jobs) == sorted(j.key for j in jobs)
    for call in calls:
        paths = call.params["paths"]
        assert len(paths) <= MAX_PATHS
        assert sum(map(is_wildcard, paths)) <= MAX_WILDCARD_PATHS
        for job in call.jobs:
            assert (job.account, job.params["distribution_id"]) == (
                call.account,
                call.params["distribution_id"],
            )
            assert all(covered(p, paths) for p in job.params["paths"])


# --- run: CreateInvalidation -------------------------------------------------------------------


@pytest.fixture
def cloudfront() -> Iterator[tuple[Any, Stubber, list[dict[str, Any]]]]:
    """A botocore CloudFront client behind a Stubber, and the request params it was sent."""
    client = botocore.session.get_session().create_client(
        "cloudfront",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sent: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.cloudfront.CreateInvalidation",
        lambda params, **_: sent.append(copy.deepcopy(params)),
    )
    with Stubber(client) as stubber:
        yield client, stubber, sent
        stubber.assert_no_pending_responses()


def invalidation_response(invalidation_id: str, paths: Sequence[str]) -> dict[str, Any]:
    return {
        "Location": f"https://cloudfront.amazonaws.com/2020-05-31/distribution/{DIST_A}/"
        f"invalidation/{invalidation_id}",
        "Invalidation": {
            "Id": invalidation_id,
            "Status": "InProgress",
            "CreateTime": datetime(2025, 1, 1, tzinfo=UTC),
            "InvalidationBatch": {
                "Paths": {"Quantity": len(paths), "Items": list(paths)},
                "CallerReference": "ref",
            },
        },
    }


def test_run_sends_distribution_paths_and_quantity(
    cloudfront: tuple[Any, Stubber, list[dict[str, Any]]],
) -> None:
    """GIVEN a call for /a.html and /img/* of one distribution
    WHEN the plugin runs it
    THEN CreateInvalidation is sent once to that distribution with exactly those paths
    AND a Quantity equal to their number."""
    client, stubber, _ = cloudfront
    paths = ["/a.html", "/img/*"]
    stubber.add_response(
        "create_invalidation",
        invalidation_response("I2J0I21PCUYOIK", paths),
        expected_params={
            "DistributionId": DIST_A,
            "InvalidationBatch": {
                "Paths": {"Quantity": 2, "Items": paths},
                "CallerReference": ANY,
            },
        },
    )
    ctx = FakeContext(client)

    get_task("cloudfront.invalidate").run(ctx, make_call(paths))

    assert ctx.requested == ["cloudfront"]


def test_run_result_resource_id_is_the_invalidation_id(
    cloudfront: tuple[Any, Stubber, list[dict[str, Any]]],
) -> None:
    """GIVEN CloudFront answers with invalidation I2J0I21PCUYOIK
    WHEN the plugin runs a call
    THEN the task result's resource_id is I2J0I21PCUYOIK."""
    client, stubber, _ = cloudfront
    stubber.add_response("create_invalidation", invalidation_response("I2J0I21PCUYOIK", ["/a"]))

    result = get_task("cloudfront.invalidate").run(FakeContext(client), make_call(["/a"]))

    assert result.resource_id == "I2J0I21PCUYOIK"


def _caller_references(
    cloudfront: tuple[Any, Stubber, list[dict[str, Any]]], *calls: Call
) -> list[str]:
    client, stubber, sent = cloudfront
    task = get_task("cloudfront.invalidate")
    for call in calls:
        stubber.add_response("create_invalidation", invalidation_response("ID1", ["/a"]))
        task.run(FakeContext(client), call)
    return [request["InvalidationBatch"]["CallerReference"] for request in sent]


def test_caller_reference_is_identical_when_the_same_call_runs_twice(
    cloudfront: tuple[Any, Stubber, list[dict[str, Any]]],
) -> None:
    """GIVEN the same call (same requests, distribution and paths) run twice, as on redelivery
    WHEN the plugin runs it each time
    THEN both requests carry the same non-empty CallerReference (CloudFront dedupes them)."""
    first, second = _caller_references(
        cloudfront, make_call(["/a", "/b/*"]), make_call(["/a", "/b/*"])
    )

    assert first
    assert first == second


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(make_call(["/a", "/c/*"]), id="different-paths"),
        pytest.param(make_call(["/a", "/b/*"], request_ids=("req-2",)), id="different-request"),
        pytest.param(
            make_call(["/a", "/b/*"], request_ids=("req-1", "req-2")), id="one-more-request"
        ),
    ],
)
def test_caller_reference_differs_when_paths_or_request_ids_differ(
    cloudfront: tuple[Any, Stubber, list[dict[str, Any]]], other: Call
) -> None:
    """GIVEN a call and another one differing in its paths or its request ids
    WHEN the plugin runs both
    THEN their CallerReferences differ (one is not mistaken for a retry of the other)."""
    first, second = _caller_references(cloudfront, make_call(["/a", "/b/*"]), other)

    assert first != second


@mock_aws
def test_run_creates_an_invalidation_cloudfront_reports_with_the_coalesced_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GIVEN a distribution in (moto's) CloudFront and two jobs of different requests for it
    WHEN the plugin plans and runs the batch
    THEN CloudFront holds one invalidation, under the returned id, with the union of paths."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    client = boto3.client(
        "cloudfront",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    distribution_id = client.create_distribution(
        DistributionConfig={
            "CallerReference": "setup",
            "Comment": "",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "origin",
                        "DomainName": "example.s3.amazonaws.com",
                        "S3OriginConfig": {"OriginAccessIdentity": ""},
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "origin",
                "ViewerProtocolPolicy": "allow-all",
                "MinTTL": 0,
                "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                "TrustedSigners": {"Enabled": False, "Quantity": 0},
            },
        }
    )["Distribution"]["Id"]
    task = get_task("cloudfront.invalidate")
    jobs = [
        make_job("req-1", ["/index.html"], distribution_id=distribution_id),
        make_job("req-2", ["/img/*"], distribution_id=distribution_id),
    ]
    (call,) = task.plan(jobs)

    result = task.run(FakeContext(client), call)

    listed = client.list_invalidations(DistributionId=distribution_id)["InvalidationList"]
    assert [i["Id"] for i in listed["Items"]] == [result.resource_id]
    batch = client.get_invalidation(DistributionId=distribution_id, Id=result.resource_id)[
        "Invalidation"
    ]["InvalidationBatch"]
    assert sorted(batch["Paths"]["Items"]) == ["/img/*", "/index.html"]
