"""boto3 clients, created once per execution environment and reused across jobs and warm
invocations: the worker's own (queues, ledger, STS, Organizations) and the target accounts'
(through ``handler.sessions``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config

from handler.sessions import RoleSessions
from handler.settings import Settings

__all__ = [
    "MAX_TARGET_CLIENTS",
    "OwnClients",
    "TargetClientKey",
    "TargetClientProvider",
    "TargetClients",
    "client_config",
]

OWN_ATTEMPTS = 3
# Measured here: a botocore client costs ~0.35 MB (its class is built per client), so 128 keep
# an instance's target clients under ~45 MB (Lambda's memory here defaults to 256 MB).
MAX_TARGET_CLIENTS = 128


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


class OwnClients:
    """Clients with the worker's own credentials, one per service."""

    def __init__(self, settings: Settings, base_session: botocore.session.Session) -> None:
        self._settings = settings
        self._base = base_session
        self._lock = threading.Lock()
        self._clients: dict[str, BaseClient] = {}

    def __call__(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                pool = max(10, self._settings.max_workers * 2)
                client = self._base.create_client(
                    service,
                    region_name=self._settings.region,
                    config=client_config(OWN_ATTEMPTS, pool),
                )
                self._clients[service] = client
            return client


@dataclass(frozen=True, slots=True)
class TargetClientKey:
    account: str
    region: str
    service: str
    policy: str
    max_attempts: int
    read_timeout: int


class TargetClientProvider(Protocol):
    """What calls need: a client for a key (tests hand in fakes)."""

    def client(self, key: TargetClientKey, *, request_id: str) -> Any: ...


class TargetClients:
    """Clients in target accounts through the target role, one per key, at most
    :data:`MAX_TARGET_CLIENTS` kept (the oldest is dropped first): a warm instance working
    through an organisation's accounts and regions must not keep a client (~0.35 MB) for each."""

    def __init__(
        self, settings: Settings, sessions: RoleSessions, *, keep: int = MAX_TARGET_CLIENTS
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._keep = keep
        self._lock = threading.Lock()
        self._clients: dict[TargetClientKey, BaseClient] = {}

    def client(self, key: TargetClientKey, *, request_id: str) -> Any:
        """The client for ``key``; ``request_id`` names the role session if one is opened."""
        client = self._clients.get(key)
        if client is not None:
            return client
        session = self._sessions.session(
            key.account, key.region, request_id=request_id, policy=key.policy
        )
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                pool = max(10, self._settings.max_workers * 2)
                client = session.create_client(
                    key.service,
                    region_name=key.region,
                    config=client_config(key.max_attempts, pool, key.read_timeout),
                )
                self._clients[key] = client
                while len(self._clients) > self._keep:  # dicts keep insertion order
                    del self._clients[next(iter(self._clients))]
        return client
