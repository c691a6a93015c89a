"""Chosen resource ids: a create request may name the ids moto gives what it creates.

moto draws ids at random. The sample events in ``events/`` name fixed ones (distribution
``E2QWRUHEXAMPLE``, instance ``i-0123456789abcdef0``, ...), so the seeder asks for them: it sends
``x-fanout-emulator-ids: <id>[,<id>...]`` with ``CreateDistribution``, ``RunInstances`` (one id
per instance, in order), ``CreateIPSet`` or Organizations' ``CreateAccount`` (so the seeded
organisation's members are the accounts the sample events name). For the duration of that
request, on the thread that serves it, moto's id generator for that kind of resource hands out
the requested ids; every other thread and request gets moto's random ids as before. The
generators are wrapped once, when the first emulator starts; only requests through the
emulator's middleware can set ids.

The seeder checks that an id is free before asking for it (moto would keep two resources under
one id); the header is a seeding tool, not an AWS feature.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from fanout.emulator.middleware import Call, Forward, Handler, Head, ServiceError
from fanout.emulator.wire import Reply

__all__ = ["IDS_HEADER", "StableIds"]

IDS_HEADER: Final = "x-fanout-emulator-ids"
# The operations that honour the header, with the pattern their ids must match.
_KINDS: Final = {
    "cloudfront.distribution": re.compile(r"E[A-Z0-9]{12,15}"),
    "ec2.instance": re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})"),
    "wafv2.ip_set": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "organizations.account": re.compile(r"[0-9]{12}"),
}
_DISTRIBUTIONS: Final = re.compile(r"^/2020-05-31/distribution$")

_wanted = threading.local()
_installed = threading.Lock()
_done: list[bool] = []


def _take(kind: str) -> str | None:
    queue: deque[str] | None = getattr(_wanted, kind.replace(".", "_"), None)
    return queue.popleft() if queue else None


@contextmanager
def _wanting(kind: str, ids: list[str]) -> Iterator[None]:
    attribute = kind.replace(".", "_")
    setattr(_wanted, attribute, deque(ids))
    try:
        yield
    finally:
        delattr(_wanted, attribute)


def _install() -> None:
    """Wrap moto's generators once per process (idempotent)."""
    with _installed:
        if _done:
            return
        import moto.ec2.models.instances as ec2_instances  # noqa: PLC0415 - moto internals
        import moto.organizations.utils as organizations_utils  # noqa: PLC0415
        from moto.cloudfront.models import Distribution  # noqa: PLC0415
        from moto.wafv2.models import WAFV2Backend  # noqa: PLC0415

        random_instance_id: Callable[[], str] = ec2_instances.random_instance_id  # type: ignore[attr-defined]

        def instance_id() -> str:
            return _take("ec2.instance") or random_instance_id()

        # Instance.__init__ looks the name up in its module at each call.
        ec2_instances.random_instance_id = instance_id  # type: ignore[attr-defined]

        distribution_init = Distribution.__init__

        def init_distribution(self: Any, account_id: str, region_name: str, config: Any) -> None:
            distribution_init(self, account_id, region_name, config)
            wanted = _take("cloudfront.distribution")
            if wanted:
                self.arn = self.arn.replace(self.distribution_id, wanted)
                self.distribution_id = self.id = wanted

        Distribution.__init__ = init_distribution  # type: ignore[method-assign]

        generate_id = WAFV2Backend._generate_id

        def waf_id(self: Any) -> str:
            return _take("wafv2.ip_set") or str(generate_id(self))

        WAFV2Backend._generate_id = waf_id  # type: ignore[method-assign]

        random_account_id: Callable[[], str] = organizations_utils.make_random_account_id

        def account_id() -> str:
            return _take("organizations.account") or random_account_id()

        # FakeAccount.__init__ calls utils.make_random_account_id through the module.
        organizations_utils.make_random_account_id = account_id
        _done.append(True)


def _kind(call: Call | Head, operation: str) -> str | None:
    if operation == "RunInstances":
        return "ec2.instance"
    if operation == "CreateIPSet":
        return "wafv2.ip_set"
    if operation == "CreateAccount":
        return "organizations.account"
    if call.method == "POST" and _DISTRIBUTIONS.match(call.path):
        return "cloudfront.distribution"
    return None


class StableIds:
    """The patch: honours ``x-fanout-emulator-ids`` on the create requests listed above."""

    name = "stable-ids"

    def __init__(self) -> None:
        _install()

    def handler(self, head: Head) -> Handler | None:
        return self._create if IDS_HEADER in head.headers else None

    def close(self) -> None:
        """Nothing runs in the background."""

    def _create(self, call: Call, forward: Forward) -> Reply:
        from fanout.emulator.wire import operation_name  # noqa: PLC0415

        operation = operation_name(call.service, call.method, call.path, call.headers, call.body)
        kind = _kind(call, operation)
        if kind is None:
            raise ServiceError(
                400, "InvalidParameterValue", f"{IDS_HEADER} is not honoured on {operation}"
            )
        ids = [i.strip() for i in call.headers[IDS_HEADER].split(",") if i.strip()]
        bad = [i for i in ids if not _KINDS[kind].fullmatch(i)]
        if bad:
            raise ServiceError(400, "InvalidParameterValue", f"{bad[0]} is not a valid {kind} id")
        with _wanting(kind, ids):
            return forward()
