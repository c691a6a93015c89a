"""Assumed-role sessions and boto3 clients, cached per execution environment.

One STS call per (partition, account, role) per credential lifetime, not per job: credentials
are botocore ``RefreshableCredentials`` that renew themselves before expiry. One client per
(account, region, service), reused across jobs and warm invocations. The role ARN is always built
here from configuration; a message can never name one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.credentials import RefreshableCredentials

from handler.exceptions import AccountNotAllowedError, FanoutError, classify_aws_error
from handler.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient

__all__ = ["SessionCache", "client_config", "partition_of", "role_arn", "session_name"]

# Longest prefix first: us-isob- before us-iso-.
_PARTITIONS: Final = (
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-isob-", "aws-iso-b"),
    ("us-iso-", "aws-iso"),
)
_SESSION_NAME_BAD_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)
_SESSION_NAME_MAX = 64
CREDENTIAL_SECONDS: Final = 3600


def partition_of(region: str) -> str:
    """The AWS partition a region belongs to (``aws``, ``aws-cn``, ``aws-us-gov``, ...)."""
    for prefix, partition in _PARTITIONS:
        if region.startswith(prefix):
            return partition
    return "aws"


def role_arn(partition: str, account: str, path: str, name: str) -> str:
    return f"arn:{partition}:iam::{account}:role{path}{name}"


def session_name(request_id: str, prefix: str = "fanout-") -> str:
    """A valid RoleSessionName / SourceIdentity (<= 64 of ``[\\w+=,.@-]``) naming the request."""
    cleaned = _SESSION_NAME_BAD_CHARS.sub("-", request_id)
    return (prefix + cleaned)[:_SESSION_NAME_MAX]


def client_config(max_attempts: int, max_pool_connections: int, read_timeout: int = 30) -> Config:
    # Standard retry mode with few attempts: tenacity adds jittered backoff bounded by the
    # function's remaining time on top, so the two layers must not multiply.
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        user_agent_extra="fanout",
    )


class SessionCache:
    """Credentials per target role and clients per (account, region, service, attempts)."""

    def __init__(
        self,
        settings: Settings,
        *,
        check_account: Callable[[str], None],
        base_session: botocore.session.Session | None = None,
    ) -> None:
        self._settings = settings
        self._check_account = check_account
        self._base = base_session or botocore.session.get_session()
        # The worker's own calls use the regional STS endpoint (the only one an STS VPC
        # interface endpoint serves).
        self._base.set_config_variable("sts_regional_endpoints", "regional")
        self._partition = partition_of(settings.region)
        self._lock = threading.Lock()  # guards the dicts and botocore session use
        self._key_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._credentials: dict[tuple[str, ...], RefreshableCredentials] = {}
        self._sessions: dict[tuple[str, ...], botocore.session.Session] = {}
        self._clients: dict[tuple[str, str, str, int, str, int], BaseClient] = {}

    @property
    def base_session(self) -> botocore.session.Session:
        return self._base

    def check_target(self, account: str, region: str) -> str:
        """The role ARN for a target, or :class:`AccountNotAllowedError`. No STS call."""
        self._check_account(account)
        partition = partition_of(region)
        if partition != self._partition:
            raise AccountNotAllowedError(
                f"region {region} is in partition {partition}; this worker runs in "
                f"{self._partition} and cannot assume roles across partitions"
            )
        return role_arn(
            partition, account, self._settings.target_role_path, self._settings.target_role_name
        )

    def client(
        self,
        service: str,
        *,
        account: str,
        region: str,
        request_id: str,
        max_attempts: int = 2,
        policy: str | None = None,
        read_timeout: int = 30,
    ) -> Any:
        """A client in ``account`` through the target role, created once and then reused.

        ``policy`` is the session policy passed on AssumeRole: sessions (and their clients) are
        cached per policy, so each plugin's jobs run with only that plugin's permissions.
        """
        key = (account, region, service, max_attempts, policy or "", read_timeout)
        client = self._clients.get(key)
        if client is not None:
            return client
        session = self._session(account, region, request_id, policy)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                pool = max(10, self._settings.max_workers * 2)
                client = session.create_client(
                    service,
                    region_name=region,
                    config=client_config(max_attempts, pool, read_timeout),
                )
                self._clients[key] = client
        return client

    def _session(
        self, account: str, region: str, request_id: str, policy: str | None
    ) -> botocore.session.Session:
        arn = self.check_target(account, region)
        key = (partition_of(region), account, arn, policy or "")
        session = self._sessions.get(key)
        if session is not None:
            return session
        # One lock per role: concurrent jobs for one account wait for a single AssumeRole,
        # while other accounts assume their roles in parallel.
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            session = self._sessions.get(key)
            if session is None:
                fetch = self._fetcher(arn, request_id, policy)
                credentials = RefreshableCredentials.create_from_metadata(
                    metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
                )
                with self._lock:
                    session = botocore.session.Session()
                    # Share the loaded service models: a new session would parse them again.
                    session.register_component(
                        "data_loader", self._base.get_component("data_loader")
                    )
                    # botocore has no public setter for refreshable credentials on a session;
                    # this attribute is what its own assume-role providers populate.
                    session._credentials = credentials  # type: ignore[attr-defined]
                    self._credentials[key] = credentials
                    self._sessions[key] = session
        return session

    def own_client(self, service: str) -> Any:
        """A client with the worker's own credentials (queues, ledger, STS), made once."""
        key = ("", self._settings.region, service, 3, "", 30)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._base.create_client(
                    service, region_name=self._settings.region, config=client_config(3, 10)
                )
                self._clients[key] = client
            return client

    def _sts_client(self) -> STSClient:
        return cast("STSClient", self.own_client("sts"))

    def _fetcher(
        self, arn: str, request_id: str, policy: str | None
    ) -> Callable[[], dict[str, str]]:
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
                response = self._sts_client().assume_role(**request)
            except Exception as exc:
                error: FanoutError = classify_aws_error(exc)
                raise type(error)(f"{error.reason} ({arn})") from exc
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
