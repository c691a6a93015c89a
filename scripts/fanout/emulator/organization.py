"""An AWS Organization in the emulator, big enough for targeting by OU and tag to matter.

The ops account is the management account. Layout (every account tagged ``env`` and ``team``)::

    Root
    ├── Workloads
    │   ├── Prod      111111111111, 222222222222, 210000000001-009, 210000000010 (suspended)
    │   │   └── ProdEU  333333333333, 220000000001-009
    │   └── Staging   230000000001-010
    └── Sandbox       444444444444, 240000000001-009

42 accounts: the sample events' accounts (111..., 222..., 333...; 444... is the one the
emulator's allow-list leaves out) and generated ones. Account ids are fixed (the emulator's
``ids`` patch for ``CreateAccount``); OU and root ids are moto's, read back after seeding.
Seeding again in the same emulator reuses what exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fanout.emulator.seed import _asking_for_ids, fake_session

__all__ = ["LAYOUT", "OrgTree", "seed_org_tree"]

SUSPENDED: Final = "210000000010"


def _generated(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{n:010d}"[:12] for n in range(1, count + 1))


# OU name -> (parent OU name or "" for the root, env tag, accounts)
LAYOUT: Final[Mapping[str, tuple[str, str, tuple[str, ...]]]] = {
    "Workloads": ("", "", ()),
    "Prod": ("Workloads", "prod", ("111111111111", "222222222222", *_generated("21", 10))),
    "ProdEU": ("Prod", "prod", ("333333333333", *_generated("22", 9))),
    "Staging": ("Workloads", "staging", _generated("23", 10)),
    "Sandbox": ("", "sandbox", ("444444444444", *_generated("24", 9))),
}


@dataclass(frozen=True, slots=True)
class OrgTree:
    root: str
    ous: Mapping[str, str]  # OU name -> id
    accounts: Mapping[str, str]  # account -> its OU's name
    tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    suspended: tuple[str, ...] = (SUSPENDED,)

    def in_ou(self, *names: str) -> tuple[str, ...]:
        return tuple(sorted(a for a, ou in self.accounts.items() if ou in names))


def _team(account: str) -> str:
    return "web" if int(account[-1]) % 2 else "data"


def seed_org_tree(endpoint_url: str, region: str = "us-east-1") -> OrgTree:
    """Create (or find) the organisation above; its ids."""
    client: Any = fake_session(region).client("organizations", endpoint_url=endpoint_url)
    with contextlib.suppress(client.exceptions.AlreadyInOrganizationException):
        client.create_organization(FeatureSet="ALL")
    root = client.list_roots()["Roots"][0]["Id"]
    existing = {
        a["Id"]: a
        for page in client.get_paginator("list_accounts").paginate()
        for a in page["Accounts"]
    }
    ous: dict[str, str] = {}
    accounts: dict[str, str] = {}
    tags: dict[str, dict[str, str]] = {}
    for name, (parent_name, env, members) in LAYOUT.items():
        parent = ous[parent_name] if parent_name else root
        ous[name] = _ou(client, parent, name)
        for account in members:
            tags[account] = {"env": env, "team": _team(account)}
            accounts[account] = name
            if account not in existing:
                with _asking_for_ids(client, "CreateAccount", (account,)):
                    client.create_account(
                        AccountName=f"{name.lower()}-{account[-4:]}",
                        Email=f"aws+{account}@example.com",
                        Tags=[{"Key": k, "Value": v} for k, v in tags[account].items()],
                    )
                client.move_account(
                    AccountId=account, SourceParentId=root, DestinationParentId=ous[name]
                )
    if existing.get(SUSPENDED, {}).get("Status") != "SUSPENDED":
        client.close_account(AccountId=SUSPENDED)
    return OrgTree(root=root, ous=ous, accounts=accounts, tags=tags)


def _ou(client: Any, parent: str, name: str) -> str:
    for page in client.get_paginator("list_organizational_units_for_parent").paginate(
        ParentId=parent
    ):
        for ou in page["OrganizationalUnits"]:
            if ou["Name"] == name:
                return str(ou["Id"])
    return str(
        client.create_organizational_unit(ParentId=parent, Name=name)["OrganizationalUnit"]["Id"]
    )
