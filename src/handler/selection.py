"""Targets by organisation: a body's ``select`` -> the accounts and regions it names.

One function, :func:`select_accounts`, used by the worker (``handler.expansion``) and by
``fanout targets``, so what an operator previews is what runs. The rules:

- ``organizational_units`` (OU or root ids; child OUs too with ``include_child_ous``) and
  ``account_tags`` (Organizations tags, every one must match) intersect; either alone selects
  by itself (tags alone: the whole organisation, filtered by its tags);
- ``exclude_accounts`` are taken out, and so is every account that is not ACTIVE (suspended
  or closing accounts cannot be entered; they are reported, not targeted);
- ``regions`` (default: the worker's region) multiply the accounts; explicit ``targets`` of the
  same body are added; the same (account, region) twice is one target.

The allow-list is not applied here: accounts outside it stay in the set and are refused by the
worker before any STS call, each with its reason, so an operator sees them instead of having
them vanish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handler.contract import SELECT_SCHEMA, validate
from handler.exceptions import BadMessageError
from handler.organization import Directory, Member

__all__ = ["Selected", "Selection", "select_accounts"]


@dataclass(frozen=True, slots=True)
class Selection:
    """A validated ``select`` block."""

    organizational_units: tuple[str, ...] = ()
    include_child_ous: bool = False
    account_tags: Mapping[str, str] = field(default_factory=dict)
    exclude_accounts: frozenset[str] = frozenset()
    regions: tuple[str, ...] = ()
    params_by_account: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    shared_params: Mapping[str, Any] = field(default_factory=dict)  # the body's `params`

    @classmethod
    def of(
        cls,
        raw: Mapping[str, Any],
        *,
        default_region: str,
        shared_params: Mapping[str, Any] | None = None,
    ) -> Selection:
        """A validated block; :class:`BadMessageError` (naming the field) when it is bad or
        selects nothing."""
        validate(SELECT_SCHEMA, raw, what="body.select")
        if not raw.get("organizational_units") and not raw.get("account_tags"):
            raise BadMessageError(
                "body.select must name organizational_units or account_tags (the root id "
                "r-... selects the whole organisation)"
            )
        return cls(
            organizational_units=tuple(raw.get("organizational_units", ())),
            include_child_ous=bool(raw.get("include_child_ous", False)),
            account_tags=dict(raw.get("account_tags", {})),
            exclude_accounts=frozenset(raw.get("exclude_accounts", ())),
            regions=tuple(raw.get("regions") or (default_region,)),
            params_by_account={k: dict(v) for k, v in raw.get("params_by_account", {}).items()},
            shared_params=dict(shared_params or {}),
        )


@dataclass(frozen=True, slots=True)
class Selected:
    """What a selection found: the accounts to target, and those it left out and why."""

    accounts: tuple[str, ...]  # sorted
    excluded: tuple[str, ...] = ()  # named in exclude_accounts
    inactive: Mapping[str, str] = field(default_factory=dict)  # account -> its status
    untagged: int = 0  # in the OUs, but without the tags asked for


def select_accounts(selection: Selection, directory: Directory) -> Selected:
    """The accounts ``selection`` names, as Organizations says now (raises what it raises)."""
    members: dict[str, Member]
    if selection.organizational_units:
        members = directory.members(
            selection.organizational_units, include_children=selection.include_child_ous
        )
    else:
        members = directory.all_members()
    excluded = sorted(a for a in members if a in selection.exclude_accounts)
    inactive = {a: m.status for a, m in sorted(members.items()) if not m.active}
    candidates = [
        a for a in sorted(members) if a not in selection.exclude_accounts and a not in inactive
    ]
    wanted = selection.account_tags.items()
    chosen = [a for a in candidates if not wanted or wanted <= directory.tags(a).items()]
    return Selected(
        accounts=tuple(chosen),
        excluded=tuple(excluded),
        inactive=inactive,
        untagged=len(candidates) - len(chosen),
    )
