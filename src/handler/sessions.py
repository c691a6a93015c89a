"""Assumed-role sessions in target accounts: one STS call per role session per credential
lifetime, not per job.

A session is keyed by (account, role ARN, session policy): each plugin's jobs run with only
that plugin's permissions, and botocore's ``RefreshableCredentials`` renew themselves before
expiry. The role ARN is always built here from configuration; a message can never name one.
Every AssumeRole is preceded by the authorizer's check of the account (``handler.authorization``
decides; this module only asks).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import botocore.session
from botocore.credentials import CredentialProvider, CredentialResolver, RefreshableCredentials

from handler.exceptions import FanoutError, classify_aws_error
from handler.settings import Settings
from tasks.aws import partition_of

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient

__all__ = ["CREDENTIAL_SECONDS", "RoleSessions", "role_arn", "session_name"]

CREDENTIAL_SECONDS: Final = 3600
# Sessions kept per execution environment (the oldest dropped first): an organisation's worth
# of accounts must not grow an instance's memory without bound (~0.13 MB each, measured here).
MAX_ROLE_SESSIONS: Final = 256
_SESSION_NAME_BAD_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)
_SESSION_NAME_MAX = 64


def role_arn(partition: str, account: str, path: str, name: str) -> str:
    return f"arn:{partition}:iam::{account}:role{path}{name}"


def session_name(request_id: str, prefix: str = "fanout-") -> str:
    """A valid RoleSessionName / SourceIdentity (<= 64 of ``[\\w+=,.@-]``) naming the request."""
    cleaned = _SESSION_NAME_BAD_CHARS.sub("-", request_id)
    return (prefix + cleaned)[:_SESSION_NAME_MAX]


@dataclass(frozen=True, slots=True)
class _SessionKey:
    account: str
    role_arn: str
    policy: str


class _AssumedRole(CredentialProvider):
    """botocore's public extension point for credentials: a session resolves to these."""

    METHOD = "sts-assume-role"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self._credentials


class RoleSessions:
    """botocore sessions acting as the target role, created once per key and reused."""

    def __init__(
        self,
        settings: Settings,
        *,
        sts: Callable[[], STSClient],
        check: Callable[[str, str], None],
        base_session: botocore.session.Session,
    ) -> None:
        self._settings = settings
        self._sts = sts
        self._check = check
        self._base = base_session
        self._lock = threading.Lock()
        self._key_locks: dict[_SessionKey, threading.Lock] = {}
        self._sessions: dict[_SessionKey, botocore.session.Session] = {}

    def role_arn(self, account: str, region: str) -> str:
        return role_arn(
            partition_of(region),
            account,
            self._settings.target_role_path,
            self._settings.target_role_name,
        )

    def session(
        self, account: str, region: str, *, request_id: str, policy: str
    ) -> botocore.session.Session:
        """The session for ``account`` under ``policy``; AssumeRole on first use only."""
        self._check(account, region)
        key = _SessionKey(account, self.role_arn(account, region), policy)
        session = self._sessions.get(key)
        if session is not None:
            return session
        # One lock per key: concurrent jobs for one account wait for a single AssumeRole,
        # while other accounts assume their roles in parallel.
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            session = self._sessions.get(key)
            if session is None:
                fetch = self._fetcher(key.role_arn, request_id, policy)
                credentials = RefreshableCredentials.create_from_metadata(
                    metadata=fetch(), refresh_using=fetch, method=_AssumedRole.METHOD
                )
                session = botocore.session.Session()
                # Share the loaded service models: a new session would parse them again.
                session.register_component("data_loader", self._base.get_component("data_loader"))
                session.register_component(
                    "credential_provider", CredentialResolver([_AssumedRole(credentials)])
                )
                with self._lock:
                    self._sessions[key] = session
                    # The oldest go first; an account met again assumes its role again.
                    while len(self._sessions) > MAX_ROLE_SESSIONS:
                        oldest = next(iter(self._sessions))
                        del self._sessions[oldest]
                        self._key_locks.pop(oldest, None)
        return session

    def _fetcher(self, arn: str, request_id: str, policy: str) -> Callable[[], dict[str, str]]:
        name = session_name(request_id)
        request: dict[str, Any] = {
            "RoleArn": arn,
            "RoleSessionName": name,
            "SourceIdentity": name,
            "DurationSeconds": CREDENTIAL_SECONDS,
        }
        if self._settings.external_id:
            request["ExternalId"] = self._settings.external_id
        if policy:
            request["Policy"] = policy

        def fetch() -> dict[str, str]:
            try:
                response = self._sts().assume_role(**request)
            except Exception as exc:
                error: FanoutError = classify_aws_error(exc)
                raise error.with_reason(f"{error.reason} ({arn})") from exc
            credentials = response["Credentials"]
            expiration = credentials["Expiration"]
            return {
                "access_key": credentials["AccessKeyId"],
                "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"],
                "expiry_time": expiration.isoformat()
                if isinstance(expiration, datetime)
                else str(expiration),
            }

        return fetch
