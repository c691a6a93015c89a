"""The emulator's CreateInvalidation honours CallerReference as CloudFront does.

CloudFront: the same CallerReference with the same paths returns the invalidation created
first; with other paths it is InvalidationBatchAlreadyExists; paths begin with '/'. moto alone
creates a new invalidation every time.
"""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from fanout.emulator import Organisation

if TYPE_CHECKING:
    from mypy_boto3_cloudfront import CloudFrontClient

pytestmark = pytest.mark.integration


@pytest.fixture
def cloudfront(organisation: Organisation) -> CloudFrontClient:
    session = organisation.target_session(organisation.account_ids[0])
    client: CloudFrontClient = session.client("cloudfront", endpoint_url=organisation.endpoint_url)
    return client


def new_distribution(cloudfront: CloudFrontClient) -> str:
    """A distribution of this test's own: its invalidations are the test's alone."""
    origin = f"{uuid.uuid4().hex[:8]}.s3.amazonaws.com"
    return cloudfront.create_distribution(
        DistributionConfig={
            "CallerReference": uuid.uuid4().hex,
            "Comment": "test",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "o",
                        "DomainName": origin,
                        "S3OriginConfig": {"OriginAccessIdentity": ""},
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "o",
                "ViewerProtocolPolicy": "allow-all",
                "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6",
            },
        }
    )["Distribution"]["Id"]


@pytest.fixture
def distribution(cloudfront: CloudFrontClient) -> str:
    return new_distribution(cloudfront)


def invalidate(
    cloudfront: CloudFrontClient, distribution: str, reference: str, paths: list[str]
) -> dict[str, Any]:
    return dict(
        cloudfront.create_invalidation(
            DistributionId=distribution,
            InvalidationBatch={
                "CallerReference": reference,
                "Paths": {"Quantity": len(paths), "Items": paths},
            },
        )
    )


def invalidation_ids(cloudfront: CloudFrontClient, distribution: str) -> list[str]:
    listing = cloudfront.list_invalidations(DistributionId=distribution)["InvalidationList"]
    return [item["Id"] for item in listing.get("Items", [])]


def test_the_same_reference_and_paths_return_the_first_invalidation(
    cloudfront: CloudFrontClient, distribution: str
) -> None:
    """GIVEN an invalidation of /a and /b with reference R
    WHEN R is sent again with the same paths (in another order)
    THEN the answer is the first invalidation (same id, 201, same Location) and the
    distribution has one invalidation."""
    first = invalidate(cloudfront, distribution, "ref-1", ["/a", "/b"])

    again = invalidate(cloudfront, distribution, "ref-1", ["/b", "/a"])

    assert again["Invalidation"]["Id"] == first["Invalidation"]["Id"]
    assert again["Location"] == first["Location"]
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert invalidation_ids(cloudfront, distribution) == [first["Invalidation"]["Id"]]


def test_the_same_reference_with_other_paths_is_invalidation_batch_already_exists(
    cloudfront: CloudFrontClient, distribution: str
) -> None:
    """GIVEN an invalidation of /a with reference R
    WHEN R is sent with /a and /c
    THEN CloudFront's InvalidationBatchAlreadyExists (HTTP 409), and still one invalidation."""
    first = invalidate(cloudfront, distribution, "ref-1", ["/a"])

    with pytest.raises(ClientError) as caught:
        invalidate(cloudfront, distribution, "ref-1", ["/a", "/c"])

    assert caught.value.response["Error"]["Code"] == "InvalidationBatchAlreadyExists"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert invalidation_ids(cloudfront, distribution) == [first["Invalidation"]["Id"]]


def test_a_reference_is_per_distribution(cloudfront: CloudFrontClient, distribution: str) -> None:
    """GIVEN reference R used on one distribution WHEN R is used on another
    THEN each distribution has an invalidation of its own."""
    other = new_distribution(cloudfront)

    first = invalidate(cloudfront, distribution, "ref-1", ["/a"])
    second = invalidate(cloudfront, other, "ref-1", ["/a"])

    assert first["Invalidation"]["Id"] != second["Invalidation"]["Id"]
    assert invalidation_ids(cloudfront, other) == [second["Invalidation"]["Id"]]


def test_a_path_without_a_leading_slash_is_invalid(
    cloudfront: CloudFrontClient, distribution: str
) -> None:
    """GIVEN a batch with "index.html" WHEN it is sent
    THEN InvalidArgument (400) and no invalidation."""
    with pytest.raises(ClientError) as caught:
        invalidate(cloudfront, distribution, "ref-1", ["/ok", "index.html"])

    assert caught.value.response["Error"]["Code"] == "InvalidArgument"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert invalidation_ids(cloudfront, distribution) == []


def test_concurrent_repeats_of_one_reference_create_one_invalidation(
    organisation: Organisation, distribution: str
) -> None:
    """GIVEN eight clients WHEN they send the same reference and paths at the same instant
    THEN all get the same invalidation and the distribution has one."""
    session = organisation.target_session(organisation.account_ids[0])
    clients = [
        session.client("cloudfront", endpoint_url=organisation.endpoint_url) for _ in range(8)
    ]
    ids: list[str] = []
    start = threading.Barrier(len(clients))

    def send(client: CloudFrontClient) -> None:
        start.wait()
        ids.append(invalidate(client, distribution, "ref-race", ["/x"])["Invalidation"]["Id"])

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(ids) == len(clients)
    assert len(set(ids)) == 1
    assert invalidation_ids(cloudfront=clients[0], distribution=distribution) == ids[:1]
