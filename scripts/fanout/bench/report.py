"""``bench/results/latest.md`` and ``latest.json`` from the benchmarks' results."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fanout.bench.common import Result

__all__ = ["summary_lines", "write"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _met(result: Result) -> str:
    return {True: "yes", False: "**no**", None: "error"}[result.met]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in rows]
    return lines


def _b1(details: dict[str, Any]) -> list[str]:
    rows = [
        _b1_row("worker (DynamoDB ledger, as deployed)", details["worker"]),
        _b1_row("worker, in-memory ledger", details["worker_in_memory_ledger"]),
        _b1_row("baseline (original pattern)", details["baseline"]),
        _b1_row("botocove", details["botocove"]),
    ]
    rate = details["cloudfront_quota"][0]
    latency = f"+{details['latency_ms']:.0f} ms per call"
    rows.append(_b1_row(f"worker, {latency}", details["with_latency"]["worker"]))
    rows.append(
        _b1_row(
            f"worker, in-memory ledger, {latency}",
            details["with_latency_worker_in_memory_ledger"],
        )
    )
    for key in ("baseline", "botocove"):
        rows.append(_b1_row(f"{key}, {latency}", details["with_latency"][key]))
    for key in ("worker", "baseline", "botocove"):
        rows.append(_b1_row(f"{key}, quota {rate:g}/s per account", details["with_quota"][key]))
    header = (
        "contender",
        "wall s",
        "AssumeRole",
        "CreateInvalidation (throttled)",
        "all API calls",
        f"paths done / {details['entries']}",
        "paths twice",
        "emulator CPU s (of wall)",
    )
    lines = _table(header, rows)
    phase_rows = []
    for label, r in (
        ("worker (DynamoDB ledger)", details["worker"]),
        ("worker, in-memory ledger", details["worker_in_memory_ledger"]),
        (f"worker, +{details['latency_ms']:.0f} ms per call", details["with_latency"]["worker"]),
        (
            f"worker, in-memory ledger, +{details['latency_ms']:.0f} ms per call",
            details["with_latency_worker_in_memory_ledger"],
        ),
    ):
        p = r["dispatcher_seconds"]
        seconds = (r["handler_seconds"], p["claim"], p["lanes"], p["record"])
        phase_rows.append([label, *(f"{x:.2f}" for x in seconds)])
    return [
        *lines,
        "",
        "The quota rounds enforce the plugin's declared CreateInvalidation rate in the proxy; "
        "the first rounds enforce none (as the brief's B1). Where the worker's handler time "
        "goes (dispatcher phases, seconds):",
        "",
        *_table(("worker", "handler", "claims", "lanes", "outcome writes"), phase_rows),
        *_cost(details.get("cost_per_million_jobs")),
    ]


def _cost(rows: list[dict[str, Any]] | None) -> list[str]:
    """fanout's own AWS requests per job of the worker round, priced per million jobs."""
    if not rows:
        return []
    table = [
        [
            r["item"],
            r["unit"],
            "" if r["per_job"] is None else f"{r['per_job']:.4g}",
            f"{r['usd_per_million_jobs']:.2f}",
            r["source"],
        ]
        for r in rows
    ]
    return [
        "",
        "What the worker round's requests cost per million targets at list prices (US East, "
        "on-demand, no free tier; `fanout.bench.cost`). Lambda time is the handler's as "
        "measured here, against the emulator (slower than AWS), at the template's 256 MB; "
        "DynamoDB units assume items under 1 KB; SQS counts publishing and receiving/deleting "
        "as the event source mapping does, not its idle long polls:",
        "",
        *_table(("item", "unit", "per job", "USD per million jobs", "price source"), table),
    ]


def _b1_row(label: str, r: dict[str, Any]) -> list[Any]:
    return [
        label,
        f"{r['seconds']:.2f}",
        r["assume_role"],
        f"{r['create_invalidation']} ({r['create_invalidation_throttled']})",
        r["api_calls"],
        r["paths_invalidated"],
        r["paths_invalidated_twice"],
        _cpu(r.get("emulator_cpu_seconds"), r["seconds"]),
    ]


def _cpu(cpu_s: float | None, wall_s: float) -> str:
    """The emulator's CPU seconds in a round, and their share of its wall time: near 1.0 the
    one-process emulator (GIL-bound) is the limit, not the design under test."""
    if cpu_s is None:
        return "-"
    return f"{cpu_s:.1f} ({cpu_s / wall_s:.0%})" if wall_s > 0 else f"{cpu_s:.1f}"


_WRITES = ("UpdateItem", "TransactWriteItems", "PutItem", "BatchWriteItem", "DeleteItem")


def _dynamodb_writes(by_operation: dict[str, int]) -> int:
    return sum(by_operation.get(f"dynamodb:{op}", 0) for op in _WRITES)


_GOODPUT_HEADER = (
    "variant",
    "rate / (Q x accts)",
    "throttled",
    "lost",
    "dup",
    "DLQ",
    "instances with work",
    "quota span s",
    "wall s",
    "DynamoDB writes",
    "emulator CPU s (of wall)",
)


def _goodput_table(variants: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """B2's and B2-multi's rounds (``b2_goodput.variant_round``), a row each."""
    rows = []
    for label, v in variants:
        active = sum(1 for r in v["instances"] if r.get("invocations"))
        rows.append(
            [
                label,
                f"{v['goodput']:.2f}",
                f"{v['throttled_ratio']:.1%}",
                v["lost"],
                v["duplicated_jobs"],
                v["jobs_dead_lettered"],
                f"{active} / {len(v['instances'])}",
                f"{v['quota_span_seconds']:.1f}",
                f"{v['wall_seconds']:.1f}",
                _dynamodb_writes(v["api_calls_by_operation"]),
                _cpu(v.get("emulator_cpu_seconds"), v["wall_seconds"]),
            ]
        )
    return _table(_GOODPUT_HEADER, rows)


def _b2(details: dict[str, Any]) -> list[str]:
    variants = [
        (label, details[key])
        for label, key in (
            ("1 worker, RATE_LIMITS = Q", "one_worker"),
            ("1 worker, in-memory ledger", "one_worker_in_memory_ledger"),
            ("baseline (original pattern)", "baseline"),
            ("2 workers, each RATE_LIMITS = Q", "two_workers_own_buckets"),
            ("2 workers, each RATE_LIMITS = Q/2", "two_workers_split_quota"),
        )
    ]
    return [
        *_goodput_table(variants),
        "",
        f"{details['jobs']} `ssm.send_command` jobs over {details['accounts']} accounts, quota "
        f"Q = {details['quota_per_account']:g}/s per account (burst {details['burst']}) enforced "
        "by the proxy. Each worker is a process of its own (its own token buckets), "
        "MAX_WORKERS=16, DynamoDB ledger, queue visibility 360 s. Rate = successful SendCommand "
        "calls / (last success - first request).",
        "",
        "The two-worker rounds pace each instance alone (`RATE_SHARING=instance`): what sharing "
        "the quota through the ledger table replaces; B2-multi measures the shared quota with 3 "
        "and 6 instances.",
    ]


def _b2_multi(details: dict[str, Any]) -> list[str]:
    variants = [
        (f"{n} workers, {label}", details["rounds"][f"{n}_{name}"])
        for n in details["processes"]
        for label, name in (
            ("shared through the table, RATE_LIMITS = Q", "shared"),
            ("each alone, RATE_LIMITS = Q / instances", "split"),
            ("each alone at Q", "own_buckets"),
        )
    ]
    return [
        *_goodput_table(variants),
        "",
        f"{details['jobs']} `ssm.send_command` jobs over {details['accounts']} accounts in "
        f"messages of {details['targets_per_message']} targets (batches of 10 messages), quota "
        f"Q = {details['quota_per_account']:g}/s per account enforced by the proxy; every worker "
        "a process of its own, DynamoDB ledger, visibility 360 s. The worker processes and the "
        "emulator share this machine's 2 cores.",
    ]


def _b7(details: dict[str, Any]) -> list[str]:
    rows = []
    for label, v in (
        ("quiet accounts alone", details["alone"]),
        ("behind the backlog, 50 targets per message", details["rounds"]["chunked"]),
        ("behind the backlog, 1 target per message", details["rounds"]["one_per_message"]),
    ):
        rows.append(
            [
                label,
                f"{v['quiet_p95_seconds']:.1f}",
                f"{v['quiet_max_seconds']:.1f}",
                f"{v['noisy_last_seconds']:.1f}" if v["noisy_jobs"] else "-",
                f"{v['throttled_ratio']:.1%}",
                v["lost"],
                v["duplicated_jobs"],
                v["jobs_dead_lettered"],
                f"{v['wall_seconds']:.1f}",
                _cpu(v.get("emulator_cpu_seconds"), v["wall_seconds"]),
            ]
        )
    header = (
        "round",
        "quiet p95 s",
        "quiet max s",
        "noisy last s",
        "throttled",
        "lost",
        "dup",
        "DLQ",
        "wall s",
        "emulator CPU s (of wall)",
    )
    return [
        *_table(header, rows),
        "",
        f"{details['quiet_accounts']} quiet accounts x {details['quiet_jobs_per_account']} "
        f"`ssm.send_command` jobs (one message each), published after one noisy account's "
        f"{details['noisy_jobs']} jobs; {details['processes']} worker processes sharing "
        f"RATE_LIMITS = Q through the ledger table, Q = {details['quota_per_account']:g}/s per "
        "account. Times are from the moment the last worker started polling to each job's "
        "SendCommand. Delivery order is the emulator's fair-queue emulation of the documented "
        "SQS behaviour (quiet tenants by MessageGroupId first; docs/emulator.md, section 5), "
        "the sending side fanout's (MessageGroupId = account).",
    ]


def _b3(details: dict[str, Any]) -> list[str]:
    rows = [
        [r["module"], r["depth"], f"{r['cumulative_ms']:.1f}", f"{r['self_ms']:.1f}"]
        for r in details["importtime_top10"]
    ]
    return [
        "`python -X importtime -c 'import handler.app'`, top 10 by cumulative time:",
        "",
        *_table(("module", "depth", "cumulative ms", "self ms"), rows),
    ]


def _b5(details: dict[str, Any]) -> list[str]:
    rows = [
        [r["function"], f"{r['cpu_seconds'] * 1000:.1f}", f"{r['share']:.0%}"]
        for r in details["top_project_attributed"][:5]
    ]
    return [
        "cProfile of the worker (lanes inline), time of each project function including the "
        "library code it calls directly:",
        "",
        *_table(("function", "profiled CPU ms", "share"), rows),
    ]


def _b6(details: dict[str, Any]) -> list[str]:
    services = [
        [service, f"{per_target:.2f}"]
        for service, per_target in details["requests_per_target_by_service"].items()
    ]
    operations = [
        [operation, str(count)]
        for operation, count in sorted(
            details["api_calls_by_operation"].items(), key=lambda item: -item[1]
        )
    ]
    instances = [
        [
            str(n),
            str(r.get("invocations", "-")),
            f"{r.get('handler_seconds', float('nan')):.1f}",
            f"{r.get('peak_rss_mb', float('nan')):.0f}",
        ]
        for n, r in enumerate(details["instances"], start=1)
    ]
    return [
        f"{details['targets']} targets ({details['accounts']} accounts x "
        f"{len(details['regions'])} regions), one request, {details['processes']} worker "
        "processes. The worker's AWS requests per target, by service (through the proxy):",
        "",
        *_table(("service", "requests per target"), services),
        "",
        *_table(("operation", "requests"), operations),
        "",
        *_table(("instance", "invocations", "handler s", "peak RSS MB"), instances),
    ]


_DETAILS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "B1": _b1,
    "B2": _b2,
    "B2-multi": _b2_multi,
    "B3": _b3,
    "B5": _b5,
    "B6": _b6,
    "B7": _b7,
}


def _markdown(results: Sequence[Result], machine: dict[str, Any], meta: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    lines = [
        "# Benchmark results",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"{machine['platform']}",
        f"- Date: {machine['date']}; mode: {meta['mode']}; suite wall time {meta['seconds']:.0f} s",
        f"- Load average (1/5/15 min) at start {meta['load_average_at_start']}, at end "
        f"{machine['load_average']}: other work on this machine makes timings noisy",
        f"- Packages: {packages}",
        f"- Command: `{meta['command']}`",
        "",
        *_table(
            ("benchmark", "measured", "target", "met?", "notes"),
            [[f"{r.key} {r.title}", r.display, r.target, _met(r), r.notes] for r in results],
        ),
    ]
    for result in results:
        render = _DETAILS.get(result.key)
        if render is None or result.met is None:
            continue
        lines += ["", f"## {result.key}", "", *render(result.details)]
    return "\n".join(lines) + "\n"


def _clean(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write(
    directory: Path, results: Sequence[Result], machine: dict[str, Any], meta: dict[str, Any]
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / "latest.md"
    js = directory / "latest.json"
    md.write_text(_markdown(results, machine, meta))
    document = {"machine": machine, **meta, "results": [asdict(r) for r in results]}
    js.write_text(json.dumps(_clean(document), indent=2) + "\n")
    return md, js


def summary_lines(results: Sequence[Result]) -> list[str]:
    width = max(len(r.display) for r in results) if results else 0
    return [
        f"{r.key}  {r.display:<{width}}  target {r.target:<40}  "
        f"{'MET' if r.met else ('ERROR' if r.met is None else 'MISSED')}"
        for r in results
    ]
