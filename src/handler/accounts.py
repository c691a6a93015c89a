"""Which accounts the worker may touch: the allow-list, organisational units, never itself.

``ALLOWED_OU_IDS`` is resolved through AWS Organizations (accounts directly in the OU and in
its child OUs), cached for a few minutes so an account moved into or out of an OU is picked up
without a redeploy. The worker's own account is refused unless ``ALLOWED_ACCOUNT_IDS`` names it
explicitly: a task meant for workloads must not reach the account that holds the keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from handler.exceptions import AccountNotAllowedError, TransientError, classify_aws_error
from handler.settings import Settings

__all__ = ["AccountDirectory"]

OU_CACHE_SECONDS = 300.0
_MAX_OU_DEPTH = 5  # Organizations allows OUs five levels deep


class AccountDirectory:
    def __init__(
        self,
        settings: Settings,
        organizations: Callable[[], Any],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._settings = settings
        self._organizations = organizations
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._ou_accounts: frozenset[str] = frozenset()
        self._resolved_at: float | None = None
        self.own_account: str | None = None

    def check(self, account: str) -> None:
        """Raise :class:`AccountNotAllowedError` unless ``account`` may be targeted."""
        explicit = account in self._settings.allowed_account_ids
        if account == self.own_account and not explicit:
            raise AccountNotAllowedError(
                f"account {account} is the worker's own account; list it in "
                "ALLOWED_ACCOUNT_IDS to allow it explicitly"
            )
        if explicit or self._settings.allow_any_account:
            return
        if self._settings.allowed_ou_ids and account in self._accounts_in_ous():
            return
        where = (
            "ALLOWED_ACCOUNT_IDS or ALLOWED_OU_IDS"
            if self._settings.allowed_ou_ids
            else ("ALLOWED_ACCOUNT_IDS")
        )
        raise AccountNotAllowedError(f"account {account} is not in {where}")

    def _accounts_in_ous(self) -> frozenset[str]:
        with self._lock:
            now = self._clock()
            if self._resolved_at is None or now - self._resolved_at > OU_CACHE_SECONDS:
                try:
                    self._ou_accounts = self._resolve(self._settings.allowed_ou_ids)
                except Exception as exc:
                    # Unknown membership is not a "no": the message waits and is retried.
                    error = classify_aws_error(exc)
                    raise TransientError(f"cannot resolve ALLOWED_OU_IDS: {error.reason}") from exc
                self._resolved_at = now
            return self._ou_accounts

    def _resolve(self, ou_ids: frozenset[str]) -> frozenset[str]:
        client = self._organizations()
        accounts: set[str] = set()
        frontier = sorted(ou_ids)
        for _ in range(_MAX_OU_DEPTH + 1):
            children: list[str] = []
            for ou in frontier:
                for page in client.get_paginator("list_accounts_for_parent").paginate(ParentId=ou):
                    accounts.update(
                        a["Id"] for a in page["Accounts"] if a.get("Status") != "SUSPENDED"
                    )
                for page in client.get_paginator("list_children").paginate(
                    ParentId=ou, ChildType="ORGANIZATIONAL_UNIT"
                ):
                    children.extend(c["Id"] for c in page["Children"])
            if not children:
                break
            frontier = children
        return frozenset(accounts)
