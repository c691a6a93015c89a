"""``ssm.send_command``: run an SSM document on instances of the target account.

SendCommand has no client token: repeating a call whose outcome is unknown could run the
command twice, so this plugin is not idempotent and only throttling errors (which guarantee the
command did not start) are retried in-function. Each command's comment starts with a token
derived from the job key; when an earlier attempt's outcome is unknown (its holder died, or the
answer was lost), ``find_previous`` looks for that token among the commands sent since the job
was first claimed (the worker passes that time from its ledger) instead of sending again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from tasks.api import (
    TARGET,
    Access,
    Call,
    Progress,
    RateLimit,
    RemoteStatus,
    Task,
    TaskContext,
    TaskResult,
    TransientError,
    register,
)

MAX_INSTANCE_IDS: Final = 50
MAX_TAG_TARGETS: Final = 5
MAX_COMMENT: Final = 100
# ListCommands pages (50 commands each) a recovery reads before giving up *without* sending:
# an unfinished search must never be taken for "not found".
MAX_RECOVERY_PAGES: Final = 40
SEND_COMMAND_RATE = RateLimit(
    api="ssm:SendCommand",
    per_second=5.0,
    burst=5,
    source="unpublished: Systems Manager throttles its API per account and Region without a "
    "documented SendCommand rate; 5/s is a conservative assumption - set RATE_LIMITS to what "
    "your accounts sustain",
)


def job_token(call: Call) -> str:
    """Marks a command as this job's: survives the 100-character comment limit."""
    return f"[fanout:{call.jobs[0].key[:16]}]"


def find_command(ssm: Any, token: str, since: datetime) -> TaskResult | None:
    """The command whose comment starts with ``token``, sent after ``since``; None when there
    is none. Raises :class:`TransientError` rather than answer "none" from a partial search."""
    request: dict[str, Any] = {
        "Filters": [{"key": "InvokedAfter", "value": since.strftime("%Y-%m-%dT%H:%M:%SZ")}]
    }
    for _ in range(MAX_RECOVERY_PAGES):
        page = ssm.list_commands(**request)
        for command in page.get("Commands", []):
            if str(command.get("Comment", "")).startswith(token):
                return TaskResult(
                    resource_id=command["CommandId"],
                    detail={"status": command.get("Status", ""), "recovered": True},
                )
        if not page.get("NextToken"):
            return None
        request["NextToken"] = page["NextToken"]
    raise TransientError(
        f"ListCommands: more than {MAX_RECOVERY_PAGES} pages of commands since "
        f"{since:%Y-%m-%dT%H:%M}Z; the previous attempt's command was not found yet, so it is "
        "not sent again now"
    )


def command_status(ssm: Any, command_id: str) -> RemoteStatus:
    """ListCommands for one command id: its overall status and error count."""
    commands = ssm.list_commands(CommandId=command_id).get("Commands", [])
    if not commands:
        return RemoteStatus("command not found", Progress.FAILED)
    command = commands[0]
    status = str(command.get("Status", ""))
    errors = int(command.get("ErrorCount", 0) or 0)
    text = f"{status} ({errors} errors)" if errors else status
    return RemoteStatus(text or "unknown", _STATUS_PROGRESS.get(status))


_STATUS_PROGRESS: Final[Mapping[str, Progress]] = {
    "Success": Progress.SUCCEEDED,
    "Pending": Progress.PENDING,
    "InProgress": Progress.PENDING,
    "Cancelling": Progress.PENDING,
    "Delayed": Progress.PENDING,
    "Failed": Progress.FAILED,
    "TimedOut": Progress.FAILED,
    "Cancelled": Progress.FAILED,
}
_RATE_OR_COUNT = {"type": "string", "pattern": r"^([1-9][0-9]{0,5}|([1-9][0-9]?|100)%)$"}


@register
class SendCommandTask(Task):
    name = "ssm.send_command"
    description = "Run an SSM document on instances (SendCommand); the result is the command id."
    service = "ssm"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["document_name"],
        "properties": {
            "document_name": {
                "type": "string",
                "pattern": r"^([a-zA-Z0-9_.-]{3,128}"
                r"|arn:[a-z-]+:ssm:[a-z0-9-]+:[0-9]{12}:document/[A-Za-z0-9_.-]{3,128})$",
                "description": "SSM document name or ARN, e.g. AWS-RunShellScript.",
            },
            "document_version": {"type": "string", "pattern": r"^(\$DEFAULT|\$LATEST|[0-9]+)$"},
            "instance_ids": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_INSTANCE_IDS,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": r"^(i|mi)-[0-9a-f]{8,17}$"},
                "description": f"Up to {MAX_INSTANCE_IDS} instance ids (or use targets).",
            },
            "targets": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_TAG_TARGETS,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["key", "values"],
                    "properties": {
                        "key": {
                            "type": "string",
                            "pattern": r"^(tag:[^\s]{1,128}|tag-key|resource-groups:Name)$",
                        },
                        "values": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 50,
                            "items": {"type": "string", "minLength": 1, "maxLength": 256},
                        },
                    },
                },
                "description": "Tag targets, e.g. [{key: 'tag:Role', values: ['dns']}].",
            },
            "parameters": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
                "description": "Document parameters, e.g. {commands: ['uptime']}.",
            },
            "comment": {"type": "string", "maxLength": MAX_COMMENT},
            "timeout_seconds": {"type": "integer", "minimum": 30, "maximum": 2592000},
            "max_concurrency": _RATE_OR_COUNT,
            "max_errors": _RATE_OR_COUNT,
        },
    }
    access = {
        TARGET: Access(
            actions=("ssm:SendCommand",),
            # ListCommands has no resource-level permissions; recovery looks commands up.
            unscoped=("ssm:ListCommands",),
        )
    }
    status_actions = ("ssm:ListCommands",)
    rate = SEND_COMMAND_RATE
    idempotent = False

    def resource_arns(
        self, role: str, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        # SendCommand is authorized on the document (AWS-owned ones have no account in their
        # ARN) and on every instance it targets; tag targets resolve to instances at run time.
        document = "*"
        instances = ["*"]
        if params is not None:
            name = str(params["document_name"])
            document = name.rsplit("/", 1)[-1] if name.startswith("arn:") else name
            instances = list(params.get("instance_ids", ["*"]))
        arns = [
            f"arn:{partition}:ssm:*::document/{document}",
            f"arn:{partition}:ssm:*:{account}:document/{document}",
        ]
        arns += [f"arn:{partition}:ec2:*:{account}:instance/{i}" for i in instances]
        arns.append(f"arn:{partition}:ssm:*:{account}:managed-instance/*")
        return tuple(arns)

    def check(self, params: Mapping[str, Any], *, account: str, region: str) -> None:
        if ("instance_ids" in params) == ("targets" in params):
            raise self.fail("give exactly one of instance_ids or targets")
        name = str(params["document_name"])
        if name.startswith("arn:"):
            # arn:partition:ssm:region:account:document/name; AWS-owned documents have no
            # account. A document of another account must not run with this account's role.
            owner = name.split(":")[4]
            if owner and owner != account:
                raise self.fail(
                    f"document_name {name[:140]!r} belongs to account {owner}, not to the "
                    f"target account {account}"
                )

    def find_previous(self, ctx: TaskContext, call: Call, *, since: datetime) -> TaskResult | None:
        return find_command(ctx.client("ssm"), job_token(call), since)

    def remote_status(self, ctx: TaskContext, result: TaskResult) -> RemoteStatus | None:
        return command_status(ctx.client("ssm"), result.resource_id)

    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        params = call.params
        # The comment shows in the target account's console and CloudTrail: it carries the job
        # token (for recovery) and, by default, the request id so the command can be traced.
        comment = params.get("comment") or f"fanout request {call.request_ids[0]}"
        request: dict[str, Any] = {
            "DocumentName": params["document_name"],
            "Comment": f"{job_token(call)} {comment}"[:MAX_COMMENT],
        }
        if "instance_ids" in params:
            request["InstanceIds"] = list(params["instance_ids"])
        else:
            request["Targets"] = [
                {"Key": t["key"], "Values": list(t["values"])} for t in params.get("targets", [])
            ]
        optional = {
            "DocumentVersion": params.get("document_version"),
            "Parameters": params.get("parameters"),
            "TimeoutSeconds": params.get("timeout_seconds"),
            "MaxConcurrency": params.get("max_concurrency"),
            "MaxErrors": params.get("max_errors"),
        }
        request.update({k: v for k, v in optional.items() if v is not None})
        command = ctx.client("ssm").send_command(**request)["Command"]
        return TaskResult(
            resource_id=command["CommandId"],
            detail={"status": command.get("Status", ""), "document": params["document_name"]},
        )
