"""``wafv2.update_ip_set``: add and/or remove CIDRs on a WAF IP set, under its lock token.

UpdateIPSet replaces the whole address list, guarded by the LockToken of the GetIPSet that read
it: a concurrent writer makes the update fail with ``WAFOptimisticLockException``, and the
plugin reads the set again and recomputes (a few times, jittered). The change is a set union and
difference, so repeating it changes nothing: the plugin is idempotent, and when the set already
holds what was asked it succeeds without calling UpdateIPSet at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Final

from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from tasks.api import (
    GLOBAL_CONTROL_PLANE_REGION,
    TARGET,
    Access,
    Call,
    InvalidParamsError,
    RateLimit,
    Task,
    TaskContext,
    TaskFailedError,
    TaskResult,
    TransientError,
    partition_of,
    register,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ADDRESSES: Final = 10_000  # WAF quota: CIDRs per IP set
LOCK_ATTEMPTS: Final = 5
# CLOUDFRONT-scope resources live in us-east-1 (WAF for CloudFront exists only in `aws`).
CLOUDFRONT_REGION: Final = GLOBAL_CONTROL_PLANE_REGION
_ARN_SCOPE: Final = {"REGIONAL": "regional", "CLOUDFRONT": "global"}
_VERSIONS: Final = {4: "IPV4", 6: "IPV6"}
_LOCK_ERROR: Final = "WAFOptimisticLockException"

_CIDR_LIST = {
    "type": "array",
    "maxItems": MAX_ADDRESSES,
    # IPv6 with a prefix is at most 43 characters; the plugin parses each with ipaddress.
    "items": {"type": "string", "minLength": 2, "maxLength": 43, "pattern": r"^[0-9A-Fa-f:./]+$"},
}


def parse_cidr(value: str) -> IPNetwork:
    """A CIDR (or a bare address, meaning /32 or /128), or :class:`InvalidParamsError`."""
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise InvalidParamsError(f"{value!r} is not an IP address or CIDR") from exc
        raise InvalidParamsError(
            f"{value!r} has host bits set; did you mean {loose.with_prefixlen}?"
        ) from exc
    if network.prefixlen == 0:
        raise InvalidParamsError(f"{value!r}: WAF does not accept /0 ranges")
    return network


def normalise(values: Iterable[str]) -> dict[str, IPNetwork]:
    """Canonical CIDR text (``10.0.0.1/32``, compressed lower-case IPv6) -> network."""
    networks = (parse_cidr(v) for v in values)
    return {n.with_prefixlen: n for n in networks}


def _canonical(address: str) -> str:
    """An address of the IP set in canonical form (itself when it does not parse)."""
    try:
        return ipaddress.ip_network(address, strict=False).with_prefixlen
    except ValueError:
        return address


def apply_changes(
    current: Iterable[str], add: Iterable[str], remove: Iterable[str]
) -> tuple[list[str], int, int]:
    """The new address list, and how many addresses were added and removed.

    ``add`` and ``remove`` are canonical. The set's own spellings are kept for what stays, so
    an unchanged set compares equal and needs no update.
    """
    removing = set(remove)
    kept: list[str] = []
    present: set[str] = set()
    removed = 0
    for address in current:
        canonical = _canonical(address)
        if canonical in removing:
            removed += 1
            continue
        if canonical not in present:
            kept.append(address)
            present.add(canonical)
    added = [a for a in dict.fromkeys(add) if a not in present]
    return kept + added, len(added), removed


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == _LOCK_ERROR


@register
class UpdateIPSetTask(Task):
    name = "wafv2.update_ip_set"
    description = (
        "Add and/or remove CIDRs on a WAF IP set (GetIPSet + UpdateIPSet with its lock "
        "token, re-read on conflict); the result is the IP set id."
    )
    service = "wafv2"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "id", "scope"],
        "properties": {
            "name": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9_-]{1,128}$",  # ASCII: \w is Unicode in re
                "description": "Name of the IP set, e.g. blocked-clients.",
            },
            "id": {
                "type": "string",
                "pattern": r"^[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$",
                "description": "Id of the IP set (a UUID, shown next to its name).",
            },
            "scope": {
                "enum": list(_ARN_SCOPE),
                "description": "REGIONAL (ALB, API Gateway, ... in the target region) or "
                "CLOUDFRONT (always called in us-east-1, whatever the target region).",
            },
            "add": {
                **_CIDR_LIST,
                "description": "CIDRs to add, e.g. 192.0.2.0/24 or 2001:db8::/32; a bare "
                "address means /32 (/128). Addresses already present change nothing.",
            },
            "remove": {
                **_CIDR_LIST,
                "description": "CIDRs to remove; addresses not present change nothing.",
            },
        },
    }
    access = {TARGET: Access(actions=("wafv2:GetIPSet", "wafv2:UpdateIPSet"))}
    rate = RateLimit(
        api="wafv2:UpdateIPSet",
        per_second=1.0,
        burst=1,
        source="AWS WAF quotas: at most 1 request per second per account and Region for any "
        "individual Create, Put or Update action "
        "(docs.aws.amazon.com/waf/latest/developerguide/limits.html)",
    )
    idempotent = True  # a set union/difference: repeating it changes nothing

    def resource_arns(
        self, role: str, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        if params is None:
            return (f"arn:{partition}:wafv2:*:{account}:*/ipset/*/*",)
        scope = _ARN_SCOPE[str(params["scope"])]
        return (f"arn:{partition}:wafv2:*:{account}:{scope}/ipset/{params['name']}/{params['id']}",)

    def check(self, params: Mapping[str, Any], *, account: str, region: str) -> None:
        add = normalise(params.get("add", []))
        remove = normalise(params.get("remove", []))
        if not add and not remove:
            raise self.fail("give at least one CIDR in add or remove")
        both = sorted(set(add) & set(remove))
        if both:
            raise self.fail(f"{both[0]} is in both add and remove")
        versions = {n.version for n in [*add.values(), *remove.values()]}
        if len(versions) > 1:
            raise self.fail("add and remove mix IPv4 and IPv6; an IP set holds one version")

    def rate_key(self, call: Call) -> tuple[str, str, str]:
        # The quota is the region's the API is called in (us-east-1 for CLOUDFRONT scope).
        return (call.account, self.api_region(call), self.rate.api)

    @staticmethod
    def api_region(call: Call) -> str:
        return CLOUDFRONT_REGION if call.params["scope"] == "CLOUDFRONT" else call.region

    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        region = self.api_region(call)
        if region != call.region and partition_of(call.region) != partition_of(region):
            raise self.fail(
                f"scope CLOUDFRONT exists only in the aws partition, not in {call.region}'s"
            )
        waf = ctx.client("wafv2", region=region)
        retrying = Retrying(
            retry=retry_if_exception(_is_lock_error),
            wait=wait_random_exponential(multiplier=0.1, max=2.0),
            stop=stop_after_attempt(LOCK_ATTEMPTS),
            reraise=True,
        )
        try:
            return retrying(self._update, waf, call.params)
        except ClientError as exc:
            if not _is_lock_error(exc):
                raise
            raise TransientError(
                f"UpdateIPSet: {_LOCK_ERROR}: IP set {call.params['name']} changed under "
                f"{LOCK_ATTEMPTS} attempts in a row (concurrent writers)"
            ) from exc

    def _update(self, waf: Any, params: Mapping[str, Any]) -> TaskResult:
        ident = {"Name": params["name"], "Scope": params["scope"], "Id": params["id"]}
        add = normalise(params.get("add", []))
        remove = normalise(params.get("remove", []))
        response = waf.get_ip_set(**ident)
        ip_set, lock_token = response["IPSet"], response["LockToken"]
        version = str(ip_set.get("IPAddressVersion", ""))
        wrong = [c for c, n in [*add.items(), *remove.items()] if _VERSIONS[n.version] != version]
        if wrong:
            raise InvalidParamsError(
                f"IP set {params['name']} holds {version} addresses; {wrong[0]} is not {version}"
            )
        current = list(ip_set.get("Addresses", []))
        addresses, added, removed = apply_changes(current, add, remove)
        detail: dict[str, Any] = {"added": added, "removed": removed, "addresses": len(addresses)}
        if not added and not removed:
            return TaskResult(resource_id=params["id"], detail={**detail, "lock_token": lock_token})
        if len(addresses) > MAX_ADDRESSES:
            raise TaskFailedError(
                f"IP set {params['name']} would hold {len(addresses)} addresses; "
                f"WAF allows {MAX_ADDRESSES} per IP set"
            )
        request: dict[str, Any] = {**ident, "Addresses": addresses, "LockToken": lock_token}
        # UpdateIPSet replaces every mutable field: keep the description it has.
        if ip_set.get("Description"):
            request["Description"] = ip_set["Description"]
        updated = waf.update_ip_set(**request)
        return TaskResult(
            resource_id=params["id"],
            detail={**detail, "lock_token": updated.get("NextLockToken", "")},
        )
