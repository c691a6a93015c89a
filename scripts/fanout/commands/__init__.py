"""The verbs of ``fanout``: a static name -> module map, one module per verb.

Like the task registry, the map keeps imports lazy and predictable: a verb's module (and what it
needs: boto3, rich, the worker's ``handler.api``, moto) is imported only when that verb runs or
shows its help, and ``fanout --help`` lists the verbs from the map without importing any.
Each module exposes its click command as ``command``, named like its key.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Final, NamedTuple

import click

__all__ = ["VERBS", "Verb", "load"]


class Verb(NamedTuple):
    module: str
    summary: str  # the line ``fanout --help`` shows


VERBS: Final[Mapping[str, Verb]] = {
    "demo": Verb(
        "fanout.commands.demo",
        "end-to-end run on an embedded emulator, with a report per account",
    ),
    "emulator": Verb(
        "fanout.commands.emulator",
        "start the embedded emulator with a seeded organisation; print variables",
    ),
    "publish": Verb(
        "fanout.commands.publish", "validate a task with the worker's own parser and send it"
    ),
    "poll": Verb(
        "fanout.commands.poll",
        "local stand-in for the Lambda SQS event source, calling the real handler",
    ),
    "invoke": Verb(
        "fanout.commands.invoke",
        "one SQS event file through the real handler (sam local invoke without Docker)",
    ),
    "status": Verb("fanout.commands.status", "per-target state of a request, from the ledger"),
    "cancel": Verb("fanout.commands.cancel", "stop a request in flight: nothing of it starts"),
    "update": Verb("fanout.commands.update", "change a running request's max_errors"),
    "redrive": Verb(
        "fanout.commands.redrive",
        "move dead letters back to the work queue, with filters and --dry-run",
    ),
    "env": Verb(
        "fanout.commands.env",
        "print export lines for the CLI from a deployed stack's outputs",
    ),
    "targets": Verb(
        "fanout.commands.targets",
        "what a selection (OUs, account tags, regions) expands to, by the worker's code",
    ),
    "tasks": Verb("fanout.commands.tasks", "list the task plugins: parameters, IAM actions, rate"),
    "policy": Verb(
        "fanout.commands.policy",
        "print the target role's least-privilege policy, or a session policy",
    ),
}


def load(name: str) -> click.Command | None:
    """The command of verb ``name``, importing its module; None for an unknown verb."""
    verb = VERBS.get(name)
    if verb is None:
        return None
    command = importlib.import_module(verb.module).command
    if not isinstance(command, click.Command):
        raise TypeError(f"{verb.module}.command is not a click command")
    return command
