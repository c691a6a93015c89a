"""B5: the worker's own cost per job, with every AWS call answered in-process.

``SessionCache.client`` is replaced by a fake CloudFront client that answers
``create_invalidation`` at once; the ledger is in memory (no LEDGER_TABLE) and the rate limit
is lifted, so what is left is the worker: parsing, validation, claims, planning, lanes, the
thread pool, settling, logging calls and the Powertools batch machinery. Every job targets its
own distribution, so each job is one call (no coalescing discount).

The profile is taken on a second, smaller pass with the lanes run inline in the profiled thread
(cProfile follows one thread); the timed pass uses the worker's real thread pool.
"""

from __future__ import annotations

import contextlib
import cProfile
import hashlib
import io
import itertools
import json
import pstats
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Final
from unittest import mock

from fanout.bench.common import QUIET_ENV, Result, environment

__all__ = ["run"]

TARGET_MS: Final = 0.5
PASSES: Final = 3
ACCOUNTS: Final = tuple(f"3000000000{n:02d}" for n in range(10))
REGION: Final = "us-east-1"
OPS_ACCOUNT: Final = "123456789012"


class _FakeCloudFront:
    """Answers CreateInvalidation at once, like a client whose network takes no time."""

    def __init__(self) -> None:
        self._ids = itertools.count()

    def create_invalidation(self, **_: Any) -> dict[str, Any]:
        return {"Invalidation": {"Id": f"I{next(self._ids)}", "Status": "Completed"}}


def _env() -> dict[str, str]:
    from handler.api import DEFAULT_TARGET_ROLE_NAME  # noqa: PLC0415 - the worker, loaded late

    return {
        **QUIET_ENV,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "TARGET_ROLE_NAME": DEFAULT_TARGET_ROLE_NAME,
        "ALLOWED_ACCOUNT_IDS": ",".join(ACCOUNTS),
        # Lifted: B5 measures the worker's own cost, not the quota's waits.
        "RATE_LIMITS": "cloudfront:CreateInvalidation=1000000/1000000",
    }


def _events(messages: int, targets: int, prefix: str) -> list[dict[str, Any]]:
    """SQS events of 10 records, each a v1 message of ``targets`` jobs on distinct distributions."""
    from fanout.poller import build_event  # noqa: PLC0415 - after the environment is set

    queue_arn = f"arn:aws:sqs:{REGION}:{OPS_ACCOUNT}:fanout-work"
    records = []
    for m in range(messages):
        body = json.dumps(
            {
                "version": 1,
                "task": "cloudfront.invalidate",
                # New ids per pass: the ledger would replay jobs an earlier pass ran.
                "request_id": f"{prefix}-{m}",
                "targets": [
                    {
                        "account": ACCOUNTS[t % len(ACCOUNTS)],
                        "params": {"distribution_id": f"E{m:06d}{t:06d}"},
                    }
                    for t in range(targets)
                ],
                "params": {"paths": ["/index.html", "/img/*"]},
            }
        )
        records.append(
            {
                "MessageId": f"msg-{m}",
                "ReceiptHandle": f"rh-{m}",
                "Body": body,
                "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's choice
                "Attributes": {"ApproximateReceiveCount": "1", "SenderId": "AIDABENCH"},
            }
        )
    return [
        build_event(records[i : i + 10], queue_arn=queue_arn)  # type: ignore[arg-type]
        for i in range(0, len(records), 10)
    ]


@contextmanager
def _fake_aws() -> Iterator[None]:
    from handler.clients import TargetClients  # noqa: PLC0415

    fake = _FakeCloudFront()

    # A plain function, not a Mock: a Mock records every call and would add its own cost.
    def client(_self: TargetClients, _key: Any, **_: Any) -> _FakeCloudFront:
        return fake

    with mock.patch.object(TargetClients, "client", client):
        yield


def _invoke_all(events: list[dict[str, Any]]) -> tuple[float, int]:
    from fanout.poller import LocalLambdaContext  # noqa: PLC0415
    from handler import app  # noqa: PLC0415

    failures = 0
    started = time.perf_counter()
    for event in events:
        context = LocalLambdaContext.create(
            function_name="fanout-worker",
            region=REGION,
            account=OPS_ACCOUNT,
            timeout_s=900,
            memory_mb=256,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # Powertools' EMF, printed regardless
            response = app.lambda_handler(event, context)
        app.metrics.clear_metrics()  # what the flush does when metrics are enabled
        failures += len(response.get("batchItemFailures", []))
    return time.perf_counter() - started, failures


class _InlineExecutor:
    """Runs what is submitted at once, in the caller's thread: the profiled pass sees every
    lane in one profile (cProfile follows one thread, and GIL switches would blur wall times)."""

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def __enter__(self) -> _InlineExecutor:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


def _profile(events: list[dict[str, Any]]) -> tuple[pstats.Stats, float]:
    # CPU time, not wall time: on a shared machine, preemption would land on random functions.
    profile = cProfile.Profile(time.process_time)
    with mock.patch("handler.dispatch.ThreadPoolExecutor", _InlineExecutor):
        profile.enable()
        seconds, _ = _invoke_all(events)
        profile.disable()
    return pstats.Stats(profile, stream=io.StringIO()), seconds


def _top(
    stats: pstats.Stats, key: str, count: int, keep: Callable[[str, str], bool]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_, calls, tottime, cumtime, _) in raw.items():
        where = f"{_short(filename)}:{line}({name})"
        if keep(filename, name):
            rows.append({"function": where, "calls": calls, "tottime": tottime, "cumtime": cumtime})
    rows.sort(key=lambda r: -float(r[key]))
    return rows[:count]


Func = tuple[str, int, str]


def _attributed(stats: pstats.Stats, keep: Callable[[str, str], bool]) -> dict[Func, float]:
    """Self CPU time per project function, plus the self time of the library code it calls
    (shared among callers by their share of the callee's cumulative time)."""
    raw: dict[Func, Any] = stats.stats  # type: ignore[attr-defined]
    shares: dict[Func, dict[Func, float]] = {}

    def share(func: Func, visiting: frozenset[Func]) -> dict[Func, float]:
        if _ours(func[0]):
            return {}  # the benchmark's own scaffolding (the inline executor) is nobody's cost
        if keep(func[0], func[2]):
            return {func: 1.0}
        if func in shares:
            return shares[func]
        callers = raw[func][4] if func in raw else {}
        total = sum(edge[3] for edge in callers.values()) or 1.0
        result: dict[Func, float] = {}
        for caller, edge in callers.items():
            if caller in visiting or caller not in raw:
                continue
            for project, fraction in share(caller, visiting | {func}).items():
                result[project] = result.get(project, 0.0) + fraction * edge[3] / total
        shares[func] = result
        return result

    attributed: dict[Func, float] = {}
    for func, (_, _, tottime, _, _) in raw.items():
        for project, fraction in share(func, frozenset()).items():
            attributed[project] = attributed.get(project, 0.0) + tottime * fraction
    return attributed


def _ours(filename: str) -> bool:
    return "/scripts/fanout/bench/" in filename


def _short(filename: str) -> str:
    for marker in ("/src/", "/site-packages/", "/lib/python3."):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _project(filename: str, _name: str) -> bool:
    return "/src/handler/" in filename or "/src/tasks/" in filename


def run(*, quick: bool) -> Result:
    messages = 200 if quick else 1000
    targets = 10
    with environment(_env(), unset=("LEDGER_TABLE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN")):
        from handler import app  # noqa: PLC0415

        app.reset()
        with _fake_aws():
            warm = _events(1, targets, "warm")
            _invoke_all(warm)  # builds the worker: B3 measures cold start, not this
            # The machine may be shared: the median of three passes resists a busy moment.
            passes = [_invoke_all(_events(messages, targets, f"timed{n}")) for n in range(PASSES)]
            seconds = statistics.median(p[0] for p in passes)
            failures = sum(p[1] for p in passes)
            stats, profiled_seconds = _profile(_events(messages // 5, targets, "profiled"))
        app.reset()
    jobs = messages * targets
    per_job_ms = seconds / jobs * 1000
    top_self = _top(stats, "tottime", 10, lambda *_: True)
    attributed = _attributed(stats, _project)
    total = sum(attributed.values()) or 1.0
    top_project = [
        {
            "function": f"{_short(func[0])}:{func[1]}({func[2]})",
            "cpu_seconds": seconds_,
            "share": seconds_ / total,
        }
        for func, seconds_ in sorted(attributed.items(), key=lambda kv: -kv[1])[:10]
    ]
    hot = "; ".join(f"{r['function']} {r['share']:.0%}" for r in top_project[:5])
    notes = (
        f"{jobs} jobs ({messages} msgs x {targets} targets, batches of 10, one call per job), "
        f"median of {PASSES} passes {seconds:.2f} s, {failures} failures. cProfile, CPU by "
        f"project function incl. the library code it calls ({jobs // 5} jobs): {hot}"
    )
    return Result(
        key="B5",
        title="Per-job overhead, AWS answered in-process",
        measured=per_job_ms,
        display=f"{per_job_ms:.3f} ms/job",
        target=f"<= {TARGET_MS} ms/job",
        met=per_job_ms <= TARGET_MS and failures == 0,
        notes=notes,
        details={
            "jobs": jobs,
            "seconds": seconds,
            "pass_seconds": [p[0] for p in passes],
            "failures": failures,
            "per_job_ms": per_job_ms,
            "profiled_jobs": jobs // 5,
            "profiled_seconds": profiled_seconds,
            "top_self_time": top_self,
            "top_project_attributed": top_project,
        },
    )
