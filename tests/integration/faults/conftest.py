"""Fault-injection tier: the real handler, the local poller, moto, and a fault proxy between.

Fixtures on top of ``tests/integration/conftest.py`` (the session's emulator and seeded
organisation):

- ``fault_proxy`` (session) / ``faults`` (per test, rules and counters reset): the
  :class:`~fanout.emulator.proxy.Proxy` every worker under test talks to;
- ``scenario``: queues of its own, the worker's environment pointed at the proxy, small
  deferral delays, and helpers to publish, run pollers (in this process or in a worker process
  that can be killed) and count how every job ended. Every invocation, whichever poller makes
  it, runs as Lambda runs it: in an execution environment's process, killed at the function's
  timeout (``runner.worker_invoker``).

Each scenario records its figures; the session ends with one table of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import Emulator, Organisation, create_queues
from fanout.emulator.proxy import Proxy
from fanout.invoker import Call
from fanout.poller import Poller, PollStats
from tests.integration.faults.harness import Figures, Inspector, Workload, new_id, verify
from tests.integration.faults.runner import worker_invoker

ROOT = Path(__file__).resolve().parents[3]
ACCOUNTS = ("111111111111", "222222222222", "333333333333")
VISIBILITY_TIMEOUT = 2
MAX_RECEIVE_COUNT = 5
FIGURES = pytest.StashKey[list[Figures]]()
COLUMNS = (
    "scenario",
    "jobs",
    "succeeded",
    "dead-lettered",
    "duplicated",
    "lost",
    "ended twice",
    "letter copies",
)


@pytest.fixture(scope="session")
def fault_proxy(emulator: Emulator) -> Iterator[Proxy]:
    with Proxy(emulator.endpoint_url) as proxy:
        yield proxy


@pytest.fixture(scope="session", autouse=True)
def contention() -> Iterator[int]:
    """Busy processes competing for the CPU while the suite runs: a correctness argument that
    holds only on an idle machine is no argument. ``FANOUT_FAULTS_CONTENTION`` busy processes
    (default: one per core; ``make stress`` runs two per core)."""
    count = int(os.environ.get("FANOUT_FAULTS_CONTENTION", str(os.cpu_count() or 1)))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    yield count
    for process in busy:
        process.kill()
        process.wait(timeout=10)


def _latency_s() -> float:
    """Every AWS answer slowed by ``FANOUT_FAULTS_LATENCY_MS`` (``make stress``: slow AWS)."""
    return float(os.environ.get("FANOUT_FAULTS_LATENCY_MS", "0")) / 1000.0


@pytest.fixture
def faults(fault_proxy: Proxy) -> Iterator[Proxy]:
    fault_proxy.reset(latency_s=_latency_s())
    yield fault_proxy
    fault_proxy.reset(latency_s=_latency_s())


class Scenario:
    """One test's world: its queues, its worker configuration, its workload and its runs."""

    def __init__(
        self,
        org: Organisation,
        proxy: Proxy,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        figures: list[Figures],
    ) -> None:
        self.org = org
        self.proxy = proxy
        self.inspector = Inspector(org)
        self.workload = Workload(org.queue_url, self.inspector.sqs)
        self._monkeypatch = monkeypatch
        self._tmp = tmp_path
        self._figures = figures
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}
        self._ledger_offset_s = 0.0
        self.configure()

    def configure(self, **overrides: str) -> None:
        """The worker's environment (through the proxy), with ``overrides``: this process's,
        which every execution environment started later inherits."""
        env = self.org.handler_environment(log_level="WARNING")
        env.update(
            AWS_ENDPOINT_URL=self.proxy.url,
            ALLOWED_ACCOUNT_IDS=",".join(ACCOUNTS),
            MAX_ATTEMPTS="5",
        )
        env.update(overrides)
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "RATE_LIMITS"):
            self._monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            self._monkeypatch.setenv(name, value)
        self.env = env

    def distributions(self, account: str, count: int) -> list[str]:
        return self.inspector.create_distributions(account, count)

    def poll(
        self,
        *,
        handler_factory: Call | None = None,
        function_timeout_s: float = 30.0,
        batch_size: int = 10,
        time_limit_s: float = 60.0,
        once: bool = False,
    ) -> PollStats:
        """A local poller in this process until the queue is empty (or ``once``); the real
        handler, or ``handler_factory``'s, runs in its execution environment's process."""
        invoker = worker_invoker(
            ledger_offset_s=self._ledger_offset_s, handler_factory=handler_factory
        )
        with Poller(
            self.org.queue_url,
            invoker=invoker,
            sqs=self.inspector.sqs,
            batch_size=batch_size,
            function_timeout_s=function_timeout_s,
        ) as poller:
            if once:
                poller.poll_once()
                return poller.stats
            stats = poller.run(until_empty=True, time_limit_s=time_limit_s)
        assert not stats.timed_out, f"the queue did not empty in {time_limit_s} s"
        return stats

    def spawn(
        self,
        *,
        function_timeout_s: float = 30.0,
        time_limit_s: float = 60.0,
        wait_until_polling: bool = False,
    ) -> subprocess.Popen[bytes]:
        """A worker process (``runner``) polling the same queue; ``kill`` takes it and its
        execution environment down at once."""
        n = len(self.processes)
        ready = self._tmp / f"worker-{n}.ready"
        log = (self._tmp / f"worker-{n}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.faults.runner",
                "--queue-url",
                self.org.queue_url,
                "--sqs-endpoint",
                self.org.endpoint_url,
                "--function-timeout",
                str(function_timeout_s),
                "--time-limit",
                str(time_limit_s),
                "--stats",
                str(self._tmp / f"worker-{n}.json"),
                "--ready",
                str(ready),
                "--ledger-offset",
                str(self._ledger_offset_s),
            ],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the poller and its environment
        )
        log.close()
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while wait_until_polling and not ready.exists():
            assert process.poll() is None, self._log_tail(n)
            assert time.monotonic() < deadline, "the worker process did not start polling"
            time.sleep(0.05)
        return process

    def _log_tail(self, n: int) -> str:
        log = (self._tmp / f"worker-{n}.log").read_text(errors="replace")
        return f"worker {n}'s log ends:\n{log[-3000:]}"

    def worker_stats(self, process: subprocess.Popen[bytes]) -> Mapping[str, Any]:
        n = self.processes.index(process)
        stats = self._tmp / f"worker-{n}.json"
        assert stats.exists(), f"worker {n} wrote no stats; {self._log_tail(n)}"
        return dict(json.loads(stats.read_text()))

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker process and its execution environment in one go: the invocation
        in flight stops where it is (killing the poller alone would leave its environment a
        moment to run on)."""
        os.killpg(process.pid, signal.SIGKILL)

    def locks_expire(self, after_s: float = 600.0) -> None:
        """From now on the execution environments this scenario starts see the ledger
        ``after_s`` later: the locks of a worker that died have expired (its function timeout
        passed)."""
        self._ledger_offset_s = after_s

    def verify(self, name: str) -> Figures:
        figures = verify(name, self.workload, self.inspector, self.org.dlq_url)
        self._figures.append(figures)
        return figures

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)
                process.wait(timeout=10)


@pytest.fixture
def scenario(
    organisation: Organisation,
    faults: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Scenario]:
    suffix = new_id("faults")
    queues = create_queues(
        organisation.endpoint_url,
        region=organisation.region,
        name=f"work-{suffix}",
        dlq_name=f"dlq-{suffix}",
        visibility_timeout=VISIBILITY_TIMEOUT,
        max_receive_count=MAX_RECEIVE_COUNT,
    )
    figures = request.config.stash.setdefault(FIGURES, [])
    world = Scenario(organisation.with_queues(queues), faults, monkeypatch, tmp_path, figures)
    yield world
    world.stop()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, [])
    rows = sorted(f.row() for f in figures)
    if not rows:
        return
    path = os.environ.get("FANOUT_FAULTS_FIGURES")
    if path:  # `make stress` collects every round's figures
        Path(path).write_text(
            json.dumps([dict(zip(COLUMNS, f.row(), strict=True)) for f in figures])
        )
    table = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return " | ".join(cells)

    terminalreporter.write_sep("=", "fault-injection scenarios: how every job ended")
    terminalreporter.write_line(line(COLUMNS))
    terminalreporter.write_line("-+-".join("-" * w for w in widths))
    for row in rows:
        terminalreporter.write_line(line(row))
