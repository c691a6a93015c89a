"""moto's own configuration endpoint (``/moto-api/config``) on the embedded emulator.

One setting matters here: ``lambda.use_docker``. moto runs a Lambda function's code only in
Docker; without Docker, Invoke fails (``FunctionError``). With ``use_docker: false`` Invoke
answers with the payload it was given, without running (or even looking up) the function, so
a ``lambda.invoke`` job succeeds: what that proves is the worker's path (allow-list, AssumeRole
into the account, session policy, ledger), not the function's (docs/emulator.md, section 6).
moto keeps functions created in one mode apart from the other: switch before seeding.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["lambda_runs_in_docker", "set_lambda_echo"]


def _config(endpoint_url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the emulator's http URL, from our own env
        f"{endpoint_url.rstrip('/')}/moto-api/config",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return dict(json.loads(text)) if text else {}


def set_lambda_echo(endpoint_url: str) -> None:
    """Switch moto's Lambda to its Docker-less mode (Invoke echoes the payload)."""
    _config(endpoint_url, {"lambda": {"use_docker": False}})


def lambda_runs_in_docker(endpoint_url: str) -> bool | None:
    """Whether the emulator's Lambda wants Docker; None when the endpoint is not moto's."""
    try:
        config = _config(endpoint_url, {})
    except (OSError, ValueError, urllib.error.URLError):
        return None
    use_docker = config.get("lambda", {}).get("use_docker")
    return bool(use_docker) if isinstance(use_docker, bool) else None
