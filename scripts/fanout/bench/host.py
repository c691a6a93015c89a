"""The emulator host: moto in server mode plus the counting/rate-limiting proxy, in one process.

A process of its own so that the emulator never competes with the code under test for the GIL
(AWS is not in the caller's process either). It prints one JSON line with its endpoints, serves
until its stdin closes, and answers ``GET /_proxy/effects`` from moto's state: what every
account really got (invalidations by CallerReference, SSM commands by comment, AssumeRoles).

Run by :class:`fanout.bench.common.Host`; ``python -m fanout.bench.host`` to try it by hand.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC
from typing import Any

from moto.iam.models import get_account_id_from

from fanout.emulator import start_emulator
from fanout.emulator.proxy import Proxy

__all__ = ["effects", "main"]


def effects() -> dict[str, Any]:
    """Effects per account, read from moto's backends (moto 5.x internals)."""
    from moto.cloudfront.models import cloudfront_backends  # noqa: PLC0415 - moto internals
    from moto.ssm.models import ssm_backends  # noqa: PLC0415
    from moto.sts.models import sts_backends  # noqa: PLC0415

    invalidations = [
        [account, distribution, inv.caller_ref, len(inv.paths), inv.id, list(inv.paths)]
        for account, regional in list(cloudfront_backends.items())
        for backend in list(regional.values())
        for distribution, items in list(backend.invalidations.items())
        for inv in list(items)
    ]
    commands = [
        # The request time (epoch seconds, this machine's clock): B7 times completions by it.
        [
            account,
            region,
            command.comment,
            command.command_id,
            command.requested_date_time.replace(tzinfo=UTC).timestamp(),
        ]
        for account, regional in list(ssm_backends.items())
        for region, backend in list(regional.items())
        for command in list(backend._commands)  # no public listing of all
    ]
    assume_roles = {
        account: sum(len(backend.assumed_roles) for backend in list(regional.values()))
        for account, regional in list(sts_backends.items())
    }
    return {"invalidations": invalidations, "commands": commands, "assume_roles": assume_roles}


def _admin(method: str, route: str, body: bytes) -> Any:  # noqa: ARG001 - admin signature
    return effects() if route == "effects" else None


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    emulator = start_emulator()
    # Keep-alive upstream connections: throughput is what the benchmarks measure.
    proxy = Proxy(
        emulator.endpoint_url, account_of=get_account_id_from, admin=_admin, keep_alive=True
    ).start()
    print(json.dumps({"moto": emulator.endpoint_url, "proxy": proxy.url}), flush=True)
    sys.stdin.read()  # the parent closes our stdin when it is done (or dies)
    proxy.stop()
    emulator.stop()


if __name__ == "__main__":
    main()
