"""What AWS Organizations says about accounts, read in one place: OU membership, status, tags.

The authorizer (``ALLOWED_OU_IDS``) and target selection (``select`` in a body) both ask here.
Answers are cached for :data:`CACHE_SECONDS` per OU and per account, so an organisation-wide
request reads each OU and each account's tags once per execution environment, and an account
moved into or out of an OU is picked up within minutes without a redeploy. Organizations'
request rates are low (a few per second per account); the worker's own clients retry its
throttling in botocore's standard mode, and every call is paginated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["CACHE_SECONDS", "MAX_OU_DEPTH", "Directory", "Member"]

CACHE_SECONDS: Final = 300.0
MAX_OU_DEPTH: Final = 5  # Organizations allows OUs five levels deep


@dataclass(frozen=True, slots=True)
class Member:
    """An account as its parent OU lists it."""

    account: str
    status: str  # ACTIVE, SUSPENDED or PENDING_CLOSURE

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"


class Directory:
    """Cached, paginated reads of the organisation (thread-safe)."""

    def __init__(
        self,
        organizations: Callable[[], Any],
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._client = organizations
        self._clock = clock
        self._ttl = cache_seconds
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}

    def members(self, ou_ids: Iterable[str], *, include_children: bool) -> dict[str, Member]:
        """The accounts directly in ``ou_ids`` (and in their child OUs, to Organizations'
        depth limit, when ``include_children``), by id."""
        found: dict[str, Member] = {}
        frontier = sorted(set(ou_ids))
        for _ in range(MAX_OU_DEPTH + 1):
            children: list[str] = []
            for ou in frontier:
                found.update((m.account, m) for m in self._accounts_of(ou))
                if include_children:
                    children.extend(self._child_ous(ou))
            if not children:
                break
            frontier = sorted(set(children))
        return found

    def tags(self, account: str) -> Mapping[str, str]:
        """The account's Organizations tags."""

        def read() -> dict[str, str]:
            tags: dict[str, str] = {}
            for page in self._pages("list_tags_for_resource", ResourceId=account):
                tags.update((t["Key"], t["Value"]) for t in page.get("Tags", ()))
            return tags

        result: dict[str, str] = self._cached(("tags", account), read)
        return result

    def all_members(self) -> dict[str, Member]:
        """Every account of the organisation (``ListAccounts``)."""

        def read() -> list[Member]:
            return [
                Member(a["Id"], a.get("Status", "ACTIVE"))
                for page in self._pages("list_accounts")
                for a in page["Accounts"]
            ]

        members: list[Member] = self._cached(("all", ""), read)
        return {m.account: m for m in members}

    def _accounts_of(self, ou: str) -> list[Member]:
        def read() -> list[Member]:
            return [
                Member(a["Id"], a.get("Status", "ACTIVE"))
                for page in self._pages("list_accounts_for_parent", ParentId=ou)
                for a in page["Accounts"]
            ]

        members: list[Member] = self._cached(("accounts", ou), read)
        return members

    def _child_ous(self, ou: str) -> list[str]:
        def read() -> list[str]:
            return [
                c["Id"]
                for page in self._pages(
                    "list_children", ParentId=ou, ChildType="ORGANIZATIONAL_UNIT"
                )
                for c in page["Children"]
            ]

        children: list[str] = self._cached(("children", ou), read)
        return children

    def _pages(self, operation: str, **kwargs: str) -> Iterable[Mapping[str, Any]]:
        pages: Iterable[Mapping[str, Any]] = (
            self._client().get_paginator(operation).paginate(**kwargs)
        )
        return pages

    def _cached(self, key: tuple[str, str], read: Callable[[], Any]) -> Any:
        # Reads happen outside the lock: two threads may read the same OU once each, which
        # costs a call but never blocks every lane behind one slow Organizations answer.
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] <= self._ttl:
                return hit[1]
        value = read()
        with self._lock:
            self._cache[key] = (now, value)
        return value
