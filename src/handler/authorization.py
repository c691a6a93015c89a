"""Which accounts the worker may enter, decided here and nowhere else.

An account may be entered when it is in ``ALLOWED_ACCOUNT_IDS``, or in one of the
``ALLOWED_OU_IDS`` (resolved through AWS Organizations with child OUs, by
``handler.organization``, cached for a few minutes so an account moved into or out of an OU is
picked up without a redeploy; suspended accounts are never members), or when
``ALLOW_ANY_ACCOUNT`` is set - and it is in the worker's own partition. The worker's own account
is refused unless ``ALLOWED_ACCOUNT_IDS`` names it explicitly: a task meant for workloads must
not reach the account that holds the keys.

A message is authorized whole, before any STS call: every target account and every other
account its plugin will act in (e.g. ``dns.register_instance``'s directory account). The role
sessions (``handler.sessions``) check again before every AssumeRole.
"""

from __future__ import annotations

from handler.envelope import Envelope
from handler.exceptions import (
    AccountNotAllowedError,
    BadMessageError,
    TransientError,
    classify_aws_error,
)
from handler.organization import Directory
from handler.settings import Settings
from tasks.aws import partition_of

__all__ = ["Authorizer"]


class Authorizer:
    """The worker's boundary: accounts it may enter and messages it may run."""

    def __init__(self, settings: Settings, directory: Directory) -> None:
        self._settings = settings
        self._directory = directory
        self._partition = partition_of(settings.region)
        self._own_account: str | None = None

    @property
    def own_account(self) -> str | None:
        return self._own_account

    def learn_own_account(self, account: str) -> None:
        """The worker's own account (from its function ARN), set on the first invocation."""
        if self._own_account is None:
            self._own_account = account

    def authorize(self, envelope: Envelope) -> None:
        """Refuse the whole message if it is too large or names an account out of bounds."""
        limit = self._settings.max_targets_per_message
        if envelope.target_count > limit:
            raise BadMessageError(
                f"message has {envelope.target_count} targets; MAX_TARGETS_PER_MESSAGE is {limit}"
            )
        for job in envelope.jobs:
            self.check(job.account, job.region)
        for account in sorted(envelope.accounts):
            self.check(account, self._settings.region)

    def check(self, account: str, region: str) -> None:
        """Raise :class:`AccountNotAllowedError` unless ``account`` may be entered in ``region``.
        Unknown OU membership raises :class:`TransientError` (not a "no": retried later)."""
        partition = partition_of(region)
        if partition != self._partition:
            raise AccountNotAllowedError(
                f"region {region} is in partition {partition}; this worker runs in "
                f"{self._partition} and cannot assume roles across partitions"
            )
        explicit = account in self._settings.allowed_account_ids
        if account == self._own_account and not explicit:
            raise AccountNotAllowedError(
                f"account {account} is the worker's own account; list it in "
                "ALLOWED_ACCOUNT_IDS to allow it explicitly"
            )
        if explicit or self._settings.allow_any_account:
            return
        if self._settings.allowed_ou_ids and account in self._accounts_in_ous():
            return
        where = "ALLOWED_ACCOUNT_IDS" + (
            " or ALLOWED_OU_IDS" if self._settings.allowed_ou_ids else ""
        )
        raise AccountNotAllowedError(f"account {account} is not in {where}")

    def _accounts_in_ous(self) -> frozenset[str]:
        try:
            members = self._directory.members(self._settings.allowed_ou_ids, include_children=True)
        except Exception as exc:
            error = classify_aws_error(exc)
            raise TransientError(f"cannot resolve ALLOWED_OU_IDS: {error.reason}") from exc
        return frozenset(a for a, member in members.items() if member.status != "SUSPENDED")
