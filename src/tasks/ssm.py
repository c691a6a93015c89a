"""``ssm.send_command``: run an SSM document on instances of the target account.

SendCommand has no client token: repeating a call whose outcome is unknown could run the
command twice, so this plugin is not idempotent and only throttling errors (which guarantee the
command did not start) are retried in-function. Each command's comment starts with a token
derived from the job key; when an earlier attempt died before recording its result,
``find_previous`` looks for that token instead of sending the command again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NotRequired, TypedDict

from tasks.base import Call, RateLimit, Task, TaskContext, TaskResult
from tasks.registry import register

MAX_INSTANCE_IDS = 50
MAX_TAG_TARGETS = 5
MAX_COMMENT = 100
# How far back find_previous looks: longer than any lock (a Lambda runs <= 15 minutes).
RECOVERY_WINDOW = timedelta(hours=1)
_MAX_RECOVERY_PAGES = 20


def job_token(call: Call) -> str:
    """Marks a command as this job's: survives the 100-character comment limit."""
    return f"[fanout:{call.jobs[0].key[:16]}]"


class TargetSpec(TypedDict):
    key: str
    values: list[str]


class SendCommandParams(TypedDict):
    document_name: str
    document_version: NotRequired[str]
    instance_ids: NotRequired[list[str]]
    targets: NotRequired[list[TargetSpec]]
    parameters: NotRequired[dict[str, list[str]]]
    comment: NotRequired[str]
    timeout_seconds: NotRequired[int]
    max_concurrency: NotRequired[str]
    max_errors: NotRequired[str]


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
    iam_actions = (
        "ssm:SendCommand",
        "ssm:ListCommands",
        "ssm:GetCommandInvocation",
        "ssm:ListCommandInvocations",
    )
    # These do not support resource-level permissions.
    unscoped_actions = (
        "ssm:ListCommands",
        "ssm:GetCommandInvocation",
        "ssm:ListCommandInvocations",
    )
    rate = RateLimit(api="ssm:SendCommand", per_second=5.0, burst=5)
    idempotent = False

    def resource_arns(
        self, partition: str, account: str, params: Mapping[str, Any] | None
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

    def check(self, params: Mapping[str, Any]) -> None:
        if ("instance_ids" in params) == ("targets" in params):
            raise self.fail("give exactly one of instance_ids or targets")

    def find_previous(self, ctx: TaskContext, call: Call) -> TaskResult | None:
        token = job_token(call)
        since = (datetime.now(UTC) - RECOVERY_WINDOW).strftime("%Y-%m-%dT%H:%M:%SZ")
        ssm = ctx.client("ssm")
        request: dict[str, Any] = {"Filters": [{"key": "InvokedAfter", "value": since}]}
        for _ in range(_MAX_RECOVERY_PAGES):
            page = ssm.list_commands(**request)
            for command in page.get("Commands", []):
                if str(command.get("Comment", "")).startswith(token):
                    return TaskResult(
                        resource_id=command["CommandId"],
                        detail={"status": command.get("Status", ""), "recovered": True},
                    )
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
        return None

    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        params = SendCommandParams(**call.params)  # type: ignore[typeddict-item]
        # The comment shows in the target account's console and CloudTrail: it carries the job
        # token (for recovery) and, by default, the request id so the command can be traced.
        comment = params.get("comment") or f"fanout request {call.request_ids[0]}"
        request: dict[str, Any] = {
            "DocumentName": params["document_name"],
            "Comment": f"{job_token(call)} {comment}"[:MAX_COMMENT],
        }
        if "instance_ids" in params:
            request["InstanceIds"] = params["instance_ids"]
        else:
            request["Targets"] = [
                {"Key": t["key"], "Values": t["values"]} for t in params.get("targets", [])
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
