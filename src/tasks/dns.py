"""``dns.register_instance``: an A (and PTR) record for a new instance, on the AD DNS server.

Triggered by the Auto Scaling "EC2 Instance Launch Successful" event (an EventBridge rule turns
it into this task's envelope). The plugin reads the instance's private IP in the target account
(DescribeInstances), then runs ``AWS-RunPowerShellScript`` with SSM SendCommand on the directory
host in the directory account, through the same target role (that account must be in the
worker's allow-list too).

The script is idempotent: it adds the record only when no record of that name exists, so a
command that runs twice changes nothing. SendCommand itself has no client token, so the plugin
is not idempotent; like ``ssm.send_command``, the command's comment starts with the job token
and ``find_previous`` looks for it in the directory account before sending again.

Every value written into the script is checked against a strict pattern (full match, ASCII)
right before rendering: DNS labels, an ``ipaddress`` IPv4 address, an integer TTL. The envelope's
schema checked them already; the script does not rely on that (a direct call, or a value read
from AWS such as the instance's IP, never went through it).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from tasks.api import (
    ACCOUNT_ID_PATTERN,
    REGION_PATTERN,
    TARGET,
    Access,
    Call,
    InvalidParamsError,
    RemoteStatus,
    Task,
    TaskContext,
    TaskFailedError,
    TaskResult,
    TransientError,
    register,
)
from tasks.ssm import MAX_COMMENT, SEND_COMMAND_RATE, command_status, find_command, job_token

DOCUMENT: Final = "AWS-RunPowerShellScript"
DEFAULT_HOST_NAME_PATTERN: Final = "ip-{ip_dashed}"
PLACEHOLDERS: Final = ("{instance_id}", "{ip_dashed}")
MAX_TTL_SECONDS: Final = 604_800  # a week
EXECUTION_TIMEOUT_SECONDS: Final = 300
_GONE_STATES: Final = frozenset({"shutting-down", "terminated"})

_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
LABEL_RE: Final = re.compile(_LABEL, re.ASCII)
ZONE_RE: Final = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}", re.ASCII)
MAX_ZONE_NAME: Final = 253
INSTANCE_RE: Final = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})", re.ASCII)
DIRECTORY_INSTANCE_RE: Final = re.compile(
    r"(?:i-(?:[0-9a-f]{8}|[0-9a-f]{17})|mi-[0-9a-f]{17})", re.ASCII
)
ACCOUNT_RE: Final = re.compile(ACCOUNT_ID_PATTERN.strip("^$"), re.ASCII)
REGION_RE: Final = re.compile(REGION_PATTERN.strip("^$"), re.ASCII)
# The account role of the directory host's account.
DIRECTORY: Final = "directory"
HOST_NAME_PATTERN_RE: Final = re.compile(
    r"(?:[A-Za-z0-9-]|\{instance_id\}|\{ip_dashed\})+", re.ASCII
)
# Longest values the placeholders can take: a pattern that fits with them always fits.
_LONGEST_SAMPLE: Final = {"instance_id": "i-0123456789abcdef0", "ip": "255.255.255.255"}


def _full(regex: re.Pattern[str], value: Any, what: str) -> str:
    """``value`` when it is a string that ``regex`` matches entirely, else InvalidParamsError."""
    if not isinstance(value, str) or regex.fullmatch(value) is None:
        raise InvalidParamsError(f"{what} {str(value)[:80]!r} is not valid")
    return value


def zone_name(value: Any) -> str:
    zone = _full(ZONE_RE, value, "zone_name")
    if len(zone) > MAX_ZONE_NAME:
        raise InvalidParamsError(f"zone_name is longer than {MAX_ZONE_NAME} characters")
    return zone


def render_host_name(pattern: str, *, instance_id: str, ip: ipaddress.IPv4Address) -> str:
    """The host name for an instance: ``pattern`` with its placeholders filled in.

    Raises :class:`InvalidParamsError` unless the result is a single DNS label.
    """
    _full(HOST_NAME_PATTERN_RE, pattern, "host_name_pattern")
    name = pattern.replace("{instance_id}", _full(INSTANCE_RE, instance_id, "instance_id"))
    name = name.replace("{ip_dashed}", str(ip).replace(".", "-"))
    if LABEL_RE.fullmatch(name) is None:
        raise InvalidParamsError(
            f"host name {name[:80]!r} rendered from host_name_pattern {pattern[:80]!r} is not a "
            "DNS label (letters, digits and inner '-', at most 63)"
        )
    return name


def powershell_script(
    *, zone: str, host: str, ip: ipaddress.IPv4Address, ttl_seconds: int | None
) -> list[str]:
    """The command lines: add A + PTR for ``host`` unless a record of that name exists.

    The only place values meet PowerShell; each is checked here, whatever checked it before,
    and is then safe inside single quotes (no quote, no newline, no ``$``).
    """
    zone = zone_name(zone)
    host = _full(LABEL_RE, host, "host name")
    address = str(ipaddress.IPv4Address(ip))
    ttl = ""
    if ttl_seconds is not None:
        if type(ttl_seconds) is not int or not 0 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise InvalidParamsError(f"ttl_seconds must be 0-{MAX_TTL_SECONDS}")
        ttl = f" -TimeToLive ([TimeSpan]::FromSeconds({ttl_seconds}))"
    return [
        "$ErrorActionPreference = 'Stop'",
        f"$zone = '{zone}'",
        f"$name = '{host}'",
        f"$ip = '{address}'",
        "$existing = Get-DnsServerResourceRecord -ZoneName $zone -Name $name "
        "-ErrorAction SilentlyContinue",
        "if ($existing) {",
        '  Write-Output "unchanged: $name.$zone already has a record"',
        "} else {",
        "  Add-DnsServerResourceRecordA -ZoneName $zone -Name $name -IPv4Address $ip "
        f"-CreatePtr{ttl}",
        '  Write-Output "added: $name.$zone A $ip (and PTR)"',
        "}",
    ]


PARAMS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["instance_id", "zone_name", "directory_account", "directory_instance_id"],
    "properties": {
        "instance_id": {
            "type": "string",
            "pattern": f"^{INSTANCE_RE.pattern}$",
            "description": "The launched instance, in the target account and region.",
        },
        "zone_name": {
            "type": "string",
            "maxLength": MAX_ZONE_NAME,
            "pattern": f"^{ZONE_RE.pattern}$",
            "description": "DNS zone on the directory server, e.g. corp.example.com.",
        },
        "directory_account": {
            "type": "string",
            "pattern": ACCOUNT_ID_PATTERN,
            "description": "Account of the directory (DNS) host; must be in the worker's "
            "ALLOWED_ACCOUNT_IDS (checked before any AssumeRole, like a target).",
        },
        "directory_instance_id": {
            "type": "string",
            "pattern": f"^{DIRECTORY_INSTANCE_RE.pattern}$",
            "description": "Instance (i-...) or managed instance (mi-...) running the DNS "
            "server, managed by SSM.",
        },
        "directory_region": {
            "type": "string",
            "pattern": REGION_PATTERN,
            "description": "Region of the directory host (default: the target's region).",
        },
        "host_name_pattern": {
            "type": "string",
            "maxLength": 63,
            "pattern": f"^{HOST_NAME_PATTERN_RE.pattern}$",
            "description": "Record name: letters, digits, '-' and the placeholders "
            "{instance_id} and {ip_dashed} (default ip-{ip_dashed}); it must render to one "
            "DNS label.",
        },
        "ttl_seconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_TTL_SECONDS,
            "description": "TTL of the A record (default: the zone's).",
        },
    },
}


@register
class RegisterInstanceTask(Task):
    name = "dns.register_instance"
    description = (
        "Register an instance's private IP as an A (and PTR) record on the Active Directory DNS "
        "server, with SSM SendCommand (AWS-RunPowerShellScript) on the directory host; the "
        "result is the command id."
    )
    service = "ssm"
    params_schema = PARAMS_SCHEMA
    access = {
        # The launching account only describes its instance (no resource-level permissions).
        TARGET: Access(unscoped=("ec2:DescribeInstances",)),
        # The directory account runs the script on its DNS host, and looks commands up to
        # recover an attempt whose outcome is unknown.
        DIRECTORY: Access(actions=("ssm:SendCommand",), unscoped=("ssm:ListCommands",)),
    }
    status_actions = ("ssm:ListCommands",)
    rate = SEND_COMMAND_RATE
    idempotent = False  # SendCommand has no client token (the script itself is idempotent)

    def other_accounts(self, params: Mapping[str, Any]) -> Mapping[str, str]:
        return {DIRECTORY: str(params["directory_account"])}

    def resource_arns(
        self, role: str, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        if role != DIRECTORY:
            return ()  # the target role's only action is unscoped
        document = f"arn:{partition}:ssm:*::document/{DOCUMENT}"
        if params is None:
            return (
                document,
                f"arn:{partition}:ec2:*:{account}:instance/*",
                f"arn:{partition}:ssm:*:{account}:managed-instance/*",
            )
        host = str(params["directory_instance_id"])
        if host.startswith("mi-"):
            return (document, f"arn:{partition}:ssm:*:{account}:managed-instance/{host}")
        return (document, f"arn:{partition}:ec2:*:{account}:instance/{host}")

    def check(self, params: Mapping[str, Any], *, account: str, region: str) -> None:
        ttl = params.get("ttl_seconds")
        if ttl is not None and type(ttl) is not int:
            raise self.fail(f"ttl_seconds must be a whole number of seconds, got {ttl!r}")
        zone_name(params["zone_name"])
        _full(INSTANCE_RE, params["instance_id"], "instance_id")
        _full(ACCOUNT_RE, params["directory_account"], "directory_account")
        _full(DIRECTORY_INSTANCE_RE, params["directory_instance_id"], "directory_instance_id")
        if "directory_region" in params:
            _full(REGION_RE, params["directory_region"], "directory_region")
        render_host_name(
            params.get("host_name_pattern", DEFAULT_HOST_NAME_PATTERN),
            instance_id=_LONGEST_SAMPLE["instance_id"],
            ip=ipaddress.IPv4Address(_LONGEST_SAMPLE["ip"]),
        )

    def rate_key(self, call: Call) -> tuple[str, str, str]:
        # SendCommand runs in the directory account: every account's registrations share it.
        account, region = self._directory(call)
        return (account, region, self.rate.api)

    def find_previous(self, ctx: TaskContext, call: Call, *, since: datetime) -> TaskResult | None:
        # The command was sent in the directory account: look for its job token there.
        account, region = self._directory(call)
        return find_command(
            ctx.client("ssm", account=account, region=region), job_token(call), since
        )

    def remote_status(self, ctx: TaskContext, result: TaskResult) -> RemoteStatus | None:
        account = str(result.detail.get("directory_account", ""))
        region = str(result.detail.get("directory_region", "")) or None
        if not account:
            return RemoteStatus("directory account not recorded")
        return command_status(ctx.client("ssm", account=account, region=region), result.resource_id)

    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        params = call.params
        self.check(params, account=call.account, region=call.region)
        instance_id = str(params["instance_id"])
        ip = self._private_ip(ctx, instance_id)
        host = render_host_name(
            params.get("host_name_pattern", DEFAULT_HOST_NAME_PATTERN),
            instance_id=instance_id,
            ip=ip,
        )
        zone = zone_name(params["zone_name"])
        commands = powershell_script(
            zone=zone, host=host, ip=ip, ttl_seconds=params.get("ttl_seconds")
        )
        account, region = self._directory(call)
        command = ctx.client("ssm", account=account, region=region).send_command(
            DocumentName=DOCUMENT,
            InstanceIds=[params["directory_instance_id"]],
            Parameters={
                "commands": commands,
                "executionTimeout": [str(EXECUTION_TIMEOUT_SECONDS)],
            },
            Comment=f"{job_token(call)} fanout dns {host}.{zone}"[:MAX_COMMENT],
        )["Command"]
        return TaskResult(
            resource_id=str(command["CommandId"]),
            detail={
                "host_name": host,
                "fqdn": f"{host}.{zone}",
                "ip": str(ip),
                "zone": zone,
                "directory_account": account,
                "directory_region": region,
                "status": command.get("Status", ""),
            },
        )

    @staticmethod
    def _directory(call: Call) -> tuple[str, str]:
        params = call.params
        return str(params["directory_account"]), str(params.get("directory_region", call.region))

    @staticmethod
    def _private_ip(ctx: TaskContext, instance_id: str) -> ipaddress.IPv4Address:
        response = ctx.client("ec2").describe_instances(InstanceIds=[instance_id])
        instances = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
        if not instances:
            raise TaskFailedError(f"DescribeInstances: instance {instance_id} does not exist")
        instance = instances[0]
        state = str(instance.get("State", {}).get("Name", ""))
        if state in _GONE_STATES:
            raise TaskFailedError(f"instance {instance_id} is {state}; no record registered")
        address = instance.get("PrivateIpAddress")
        if not address:
            raise TransientError(f"instance {instance_id} has no private IP address yet")
        try:
            return ipaddress.IPv4Address(address)
        except ValueError as exc:
            raise TaskFailedError(
                f"instance {instance_id} has an invalid private IP {str(address)[:40]!r}"
            ) from exc
