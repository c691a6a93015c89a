"""What every benchmark shares: the emulator host, environments, results, the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from fanout.emulator.proxy import ADMIN_PREFIX
from fanout.local_worker import environment

__all__ = [
    "QUIET_ENV",
    "REPO_ROOT",
    "ApiCalls",
    "Host",
    "Result",
    "environment",
    "machine",
    "spawn_worker",
    "worker_report",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[3]  # scripts/fanout/bench/ -> root
# The worker's JSON logs and EMF metrics would swamp the output and cost time that is not the
# worker's own in production (CloudWatch ingests them asynchronously).
QUIET_ENV: Final = {
    "LOG_LEVEL": "ERROR",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "TQDM_DISABLE": "1",  # botocove's progress bar
}


@dataclass
class Result:
    """One benchmark's headline figure, its target, and everything measured on the way."""

    key: str  # "B1" .. "B7", "B2-multi"
    title: str
    measured: float | None
    display: str  # the measured figure as shown in the table
    target: str
    met: bool | None
    notes: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class ApiCalls:
    """What the proxy counted: rows of (service, operation, account, outcome, count)."""

    rows: tuple[tuple[str, str, str, str, int], ...]
    timelines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> ApiCalls:
        rows = tuple(
            (r["service"], r["operation"], r["account"], r["outcome"], int(r["count"]))
            for r in stats["calls"]
        )
        return cls(rows, stats.get("timelines", {}))

    def count(
        self,
        operation: str | None = None,
        *,
        outcome: str | None = None,
        service: str | None = None,
    ) -> int:
        return sum(
            n
            for s, o, _, r, n in self.rows
            if (operation is None or o == operation)
            and (outcome is None or r == outcome)
            and (service is None or s == service)
        )

    def by_operation(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for s, o, _, _, n in self.rows:
            totals[f"{s}:{o}"] += n
        return dict(totals.most_common())


class Host:
    """The emulator host process (``host.py``): moto behind the proxy, on 127.0.0.1."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "fanout.bench.host"],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None  # noqa: S101 - set by PIPE
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the emulator host did not start")
        urls = json.loads(line)
        self.moto_url: str = urls["moto"]
        self.proxy_url: str = urls["proxy"]

    def _admin(self, route: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - our own 127.0.0.1 endpoint
            f"{self.proxy_url}{ADMIN_PREFIX}{route}", data=data, method="POST" if data else "GET"
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.loads(response.read())

    def reset(
        self, quotas: Mapping[str, tuple[float, int]] | None = None, *, latency_ms: float = 0.0
    ) -> None:
        """Zero the counters and set the quotas (``{"ssm:SendCommand": (rate, burst)}``) and
        the latency added to every request (none unless given)."""
        body = {"quotas": {k: list(v) for k, v in (quotas or {}).items()}, "latency_ms": latency_ms}
        self._admin("reset", body)
        self._cpu_mark = self.cpu_seconds()

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the emulator host has used so far: beside a
        round's wall time it tells a limit of the machine's emulator from one of the design."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")

    def cpu_since_reset(self) -> float:
        return self.cpu_seconds() - getattr(self, "_cpu_mark", 0.0)

    def calls(self) -> ApiCalls:
        return ApiCalls.from_stats(self._admin("stats"))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("stats")
        return result

    def effects(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("effects")
        return result

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None  # noqa: S101 - set by PIPE
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def spawn_worker(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """``python -m fanout.bench.worker_proc ARGS`` as a grandchild of a small shell.

    Linux keeps ru_maxrss across execve: a child forked from this (large) process would report
    our peak as its own. The shell forks it instead (``; exit`` stops it from exec'ing).
    """
    command = [sys.executable, "-m", "fanout.bench.worker_proc", *args]
    return subprocess.Popen(  # noqa: S603 - fixed program, arguments passed as "$@"
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", *command],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )


def worker_report(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The JSON line a worker process prints last (or why there is none)."""
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit status {process.returncode}, no report"}
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # Other work on the machine skews every timing: say how busy it was.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "packages": {
            p: _version(p)
            for p in ("boto3", "botocore", "moto", "aws-lambda-powertools", "botocove")
        },
    }
