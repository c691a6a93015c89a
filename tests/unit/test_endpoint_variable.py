"""An empty AWS_ENDPOINT_URL (as template.yaml deploys it) changes nothing; a set one is used.

botocore looks up a configured endpoint in AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL, then
the shared config file, and takes the first non-empty value (``botocore.configprovider``,
``EndpointConfigProvider``): the template declares the variable empty so that
``sam local invoke --env-vars`` can set it, and in AWS every client keeps its service endpoint.
"""

from __future__ import annotations

import boto3
import pytest

SERVICES = ("sqs", "sts", "dynamodb", "cloudfront", "ssm")


@pytest.mark.parametrize("service", SERVICES)
def test_an_empty_endpoint_variable_leaves_the_service_endpoint(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN AWS_ENDPOINT_URL="" WHEN a client is created THEN it talks to AWS's endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")

    endpoint = boto3.session.Session(region_name="eu-west-1").client(service).meta.endpoint_url

    assert endpoint.startswith("https://")
    assert endpoint.endswith(".amazonaws.com")


@pytest.mark.parametrize("service", SERVICES)
def test_a_set_endpoint_variable_points_every_client_there(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN AWS_ENDPOINT_URL=http://host.docker.internal:5000 (the local kit)
    WHEN a client is created THEN it talks to that endpoint (STS included)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://host.docker.internal:5000")

    endpoint = boto3.session.Session(region_name="eu-west-1").client(service).meta.endpoint_url

    assert endpoint == "http://host.docker.internal:5000"
