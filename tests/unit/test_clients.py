"""Target clients and role sessions are cached, but boundedly: a warm instance working through
an organisation's accounts and regions must not keep one of each for ever (B6 measured ~0.3 MB
per client; Lambda's default here is 256 MB)."""

from __future__ import annotations

import boto3
import botocore.session
import pytest

from handler import sessions as sessions_module
from handler.clients import TargetClientKey, TargetClients
from handler.sessions import RoleSessions
from handler.settings import Settings
from tests.unit.fakes import TARGET_ACCOUNTS, ApiCalls

pytestmark = pytest.mark.usefixtures("worker_env")


def _allow_all(_account: str, _region: str) -> None:
    """The authorizer's check, admitting every account (not what these tests are about)."""


def _parts() -> tuple[Settings, RoleSessions]:
    settings = Settings.from_env()
    base = botocore.session.get_session()
    roles = RoleSessions(
        settings,
        sts=lambda: boto3.client("sts"),
        check=_allow_all,
        base_session=base,
    )
    return settings, roles


def _key(account: str) -> TargetClientKey:
    return TargetClientKey(account, "us-east-1", "cloudfront", "", 2, 30)


def test_the_oldest_target_client_is_dropped_beyond_the_bound() -> None:
    """GIVEN a client cache that keeps 2
    WHEN clients for 3 accounts are asked for, then the first and the last again
    THEN the last is the same object (kept) and the first a new one (it was dropped)."""
    settings, roles = _parts()
    clients = TargetClients(settings, roles, keep=2)
    first, _, third = (clients.client(_key(a), request_id="r") for a in TARGET_ACCOUNTS[:3])

    assert clients.client(_key(TARGET_ACCOUNTS[2]), request_id="r") is third
    assert clients.client(_key(TARGET_ACCOUNTS[0]), request_id="r") is not first


def test_the_oldest_role_session_is_dropped_beyond_the_bound(
    monkeypatch: pytest.MonkeyPatch, api_calls: ApiCalls
) -> None:
    """GIVEN a session cache that keeps 2
    WHEN sessions for 3 accounts are opened, then the third and the first again
    THEN the third is reused (no AssumeRole) and the first is assumed again."""
    monkeypatch.setattr(sessions_module, "MAX_ROLE_SESSIONS", 2)
    _, roles = _parts()
    for account in TARGET_ACCOUNTS[:3]:
        roles.session(account, "us-east-1", request_id="r", policy="")
    api_calls.calls.clear()

    roles.session(TARGET_ACCOUNTS[2], "us-east-1", request_id="r", policy="")
    assert api_calls.count("AssumeRole") == 0
    roles.session(TARGET_ACCOUNTS[0], "us-east-1", request_id="r", policy="")
    assert api_calls.count("AssumeRole") == 1
