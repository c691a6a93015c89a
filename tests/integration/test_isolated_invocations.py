"""Invocations in a killable, warm process, as Lambda runs them (fake handlers: no worker).

The fakes (``tests.integration.fake_handlers``) record which process ran each invocation, so
the tests can tell a warm environment (same process) from a cold start (a new one), and prove
that a handler stopped at its timeout did not go on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fanout.emulator import Organisation
from fanout.invoker import Call, ProcessInvoker
from fanout.poller import Poller
from tests.integration.fake_handlers import DIRECTORY_ENV, NOTE_ENV, PRINTED, invocations

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Generous for the invocations that must finish: they take milliseconds, on a busy machine too.
AMPLE_TIMEOUT_S = 30.0
WAIT_LIMIT_S = 60.0
# Long enough for a hanging handler to reach its hang (it is killed at the end either way).
HANG_TIMEOUT_S = 3.0


def recorder(directory: Path, init: Call | None = None) -> ProcessInvoker:
    return ProcessInvoker(
        handler_factory=Call(
            "tests.integration.fake_handlers:recorder", {"directory": str(directory)}
        ),
        init=init,
    )


def send(sqs: SQSClient, queue_url: str, *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not: it can never run code again)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in {"Z", "X"}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition; fail only after a limit long past any loaded machine's delay."""
    give_up = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting: {what}"
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _linux_proc() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to tell whether a process still runs")


def test_invocations_within_the_timeout_share_one_warm_process(
    org: Organisation, sqs: SQSClient, tmp_path: Path
) -> None:
    """GIVEN three messages and batches of one
    WHEN the poller runs until the queue is empty
    THEN one process, not this one, ran all three invocations (a single cold start)."""
    send(sqs, org.queue_url, "ok", "ok", "ok")

    with Poller(
        org.queue_url,
        invoker=recorder(tmp_path),
        sqs=sqs,
        batch_size=1,
        function_timeout_s=AMPLE_TIMEOUT_S,
    ) as poller:
        stats = poller.run(until_empty=True, time_limit_s=WAIT_LIMIT_S)

    pids = {entry["pid"] for entry in invocations(tmp_path)}
    assert (stats.batches, stats.deleted, stats.cold_starts) == (3, 3, 1)
    assert len(pids) == 1
    assert os.getpid() not in pids
    assert all(0 < e["remaining_ms"] <= AMPLE_TIMEOUT_S * 1000 for e in invocations(tmp_path))


def test_a_handler_past_its_timeout_is_killed_and_its_batch_comes_back(
    org: Organisation,
    sqs: SQSClient,
    tmp_path: Path,
    depth: Callable[[str], tuple[int, int]],
) -> None:
    """GIVEN a handler that would write a file once it is released, and a 3 s function timeout
    WHEN the poller invokes it, and later (released) polls again
    THEN the first invocation timed out and its process is gone before it could write the
    file; nothing was deleted; the message came back after its visibility timeout and ran to
    the end in a new process (a cold start)."""
    send(sqs, org.queue_url, "hang")
    invoker = recorder(tmp_path)

    with Poller(
        org.queue_url, invoker=invoker, sqs=sqs, function_timeout_s=HANG_TIMEOUT_S
    ) as first:
        first.poll_once()
        [started] = tmp_path.glob("started-*")
        killed = int(started.name.removeprefix("started-"))
        killed_alive = alive(killed)
        in_queue = depth(org.queue_url)
    (tmp_path / "release").touch()
    with Poller(
        org.queue_url, invoker=invoker, sqs=sqs, function_timeout_s=AMPLE_TIMEOUT_S
    ) as second:
        again = second.run(until_empty=True, time_limit_s=WAIT_LIMIT_S)

    stats = first.stats
    assert (stats.function_timeouts, stats.handler_errors, stats.deleted) == (1, 0, 0)
    assert sum(in_queue) == 1  # visible again or in flight: the visibility timeout is 1 s
    assert not killed_alive, "the invocation's process outlived its timeout"
    assert not (tmp_path / f"continued-{killed}").exists(), "its code went on after the timeout"
    hung, redelivered = invocations(tmp_path)
    assert 0 < hung["remaining_ms"] <= HANG_TIMEOUT_S * 1000
    assert (hung["receive_counts"], redelivered["receive_counts"]) == (["1"], ["2"])
    assert redelivered["pid"] != killed
    assert (tmp_path / f"continued-{redelivered['pid']}").exists()
    assert (again.cold_starts, again.function_timeouts, again.deleted) == (1, 0, 1)


def test_a_handler_that_raises_fails_its_batch_and_stays_warm(
    org: Organisation,
    sqs: SQSClient,
    tmp_path: Path,
    depth: Callable[[str], tuple[int, int]],
) -> None:
    """GIVEN a handler that raises on its first batch
    WHEN the poller invokes it, then until a good message has been handled
    THEN the first batch failed whole (nothing deleted); a function error is not a crash, so
    the same environment ran every invocation."""
    send(sqs, org.queue_url, "raise")
    with Poller(
        org.queue_url, invoker=recorder(tmp_path), sqs=sqs, function_timeout_s=AMPLE_TIMEOUT_S
    ) as poller:
        poller.poll_once()
        first = (poller.stats.handler_errors, poller.stats.deleted, depth(org.queue_url))
        send(sqs, org.queue_url, "ok")
        poller.run(until_empty=True, time_limit_s=WAIT_LIMIT_S)  # the raising one: DLQ

    assert first == (1, 0, (0, 1))
    assert poller.stats.cold_starts == 1
    assert len({entry["pid"] for entry in invocations(tmp_path)}) == 1
    assert ["ok"] in [entry["bodies"] for entry in invocations(tmp_path)]


def test_the_init_hook_runs_in_the_environment_before_any_invocation(
    org: Organisation, sqs: SQSClient, tmp_path: Path
) -> None:
    """GIVEN an init hook that leaves a note in its process's environment
    WHEN the poller invokes the handler
    THEN the invocation found the note, and this process has none (the hook ran there)."""
    send(sqs, org.queue_url, "ok")
    init = Call("tests.integration.fake_handlers:prepare", {"note": "tuned"})

    with Poller(org.queue_url, invoker=recorder(tmp_path, init), sqs=sqs) as poller:
        poller.poll_once()

    assert [entry["note"] for entry in invocations(tmp_path)] == ["tuned"]
    assert NOTE_ENV not in os.environ


def test_an_init_that_fails_fails_the_invocation_and_the_next_starts_anew(
    org: Organisation, sqs: SQSClient, tmp_path: Path
) -> None:
    """GIVEN an init hook that raises
    WHEN the poller invokes twice
    THEN both invocations are function errors, each after an Init of its own (as Lambda
    retries Init in a new environment), and the handler never ran."""
    send(sqs, org.queue_url, "ok")
    init = Call("tests.integration.fake_handlers:prepare", {"note": "x", "fail": True})

    with Poller(org.queue_url, invoker=recorder(tmp_path, init), sqs=sqs, batch_size=1) as poller:
        while poller.stats.batches < 2:
            poller.poll_once()

    assert (poller.stats.handler_errors, poller.stats.cold_starts) == (2, 2)
    assert (poller.stats.deleted, invocations(tmp_path)) == (0, [])


def test_an_init_past_its_limit_runs_again_within_the_invocation(
    org: Organisation, sqs: SQSClient, tmp_path: Path
) -> None:
    """GIVEN an Init that hangs the first time, and a 1 s limit on Init
    WHEN the poller invokes the handler
    THEN that Init is stopped and run again in a new process within the invocation (as Lambda
    does), and the invocation succeeds: one cold start, two Init processes."""
    send(sqs, org.queue_url, "ok")
    init = Call("tests.integration.fake_handlers:hang_in_first_init", {"directory": str(tmp_path)})
    invoker = ProcessInvoker(
        handler_factory=Call(
            "tests.integration.fake_handlers:recorder", {"directory": str(tmp_path)}
        ),
        init=init,
        init_timeout_s=1.0,
    )

    with Poller(
        org.queue_url, invoker=invoker, sqs=sqs, function_timeout_s=AMPLE_TIMEOUT_S
    ) as poller:
        poller.poll_once()

    inits = {int(path.name.removeprefix("init-")) for path in tmp_path.glob("init-*")}
    [entry] = invocations(tmp_path)
    assert (poller.stats.deleted, poller.stats.cold_starts) == (1, 1)
    assert len(inits) == 2
    assert entry["pid"] in inits
    assert not any(alive(pid) for pid in inits - {entry["pid"]})


def test_the_handler_named_like_lambdas_handler_setting_sees_the_environment(
    org: Organisation, sqs: SQSClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN ``handler="module:function"`` and the handler's configuration in a variable
    WHEN the poller invokes it
    THEN the child process inherited the variable (the invocation is recorded there)."""
    monkeypatch.setenv(DIRECTORY_ENV, str(tmp_path))
    send(sqs, org.queue_url, "ok")
    invoker = ProcessInvoker(handler="tests.integration.fake_handlers:from_environment")

    with Poller(org.queue_url, invoker=invoker, sqs=sqs) as poller:
        poller.poll_once()

    assert poller.stats.deleted == 1
    assert [e["bodies"] for e in invocations(tmp_path)] == [["ok"]]


def test_the_handlers_stdout_goes_to_stderr(
    org: Organisation, sqs: SQSClient, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a handler that prints (Powertools logs go to stdout)
    WHEN the poller invokes it
    THEN what it printed is on this process's stderr, not its stdout."""
    send(sqs, org.queue_url, "print")

    with Poller(org.queue_url, invoker=recorder(tmp_path), sqs=sqs) as poller:
        poller.poll_once()
    out, err = capfd.readouterr()

    assert poller.stats.deleted == 1
    assert PRINTED not in out
    assert PRINTED in err


def test_fanout_poll_json_on_a_pipe_is_only_the_summary(
    aws_env: Organisation, sqs: SQSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a message for the real worker, logging at INFO
    WHEN ``fanout poll --until-empty -o json`` runs with its stdout on a pipe
    THEN stdout is one JSON document (the summary) and the worker's logs are on stderr."""
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    send(sqs, aws_env.queue_url, "not json {")  # the worker logs why it dead-letters it

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanout",
            "poll",
            "--until-empty",
            "--time-limit",
            "60",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    summary = json.loads(result.stdout)
    assert (summary["records"], summary["cold_starts"], summary["function_timeouts"]) == (1, 1, 0)
    assert '"level":"' in result.stderr.replace(" ", ""), "the worker's JSON logs are missing"


def test_an_environment_does_not_outlive_its_poller(tmp_path: Path) -> None:
    """GIVEN a poller process whose invocation hangs in its environment's process
    WHEN the poller process is SIGKILLed
    THEN the environment's process ends too (it never runs on, unattended)."""
    script = textwrap.dedent(
        f"""
        from fanout.context import LocalLambdaContext
        from fanout.invoker import Call, ProcessInvoker

        invoker = ProcessInvoker(handler_factory=Call(
            "tests.integration.fake_handlers:recorder", {{"directory": {str(tmp_path)!r}}}
        ))
        context = LocalLambdaContext.create(
            function_name="f", region="us-east-1", account="123456789012",
            timeout_s=600, memory_mb=128,
        )
        record = {{"body": "hang", "attributes": {{"ApproximateReceiveCount": "1"}}}}
        invoker.invoke({{"Records": [record]}}, context)
        """
    )
    poller = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        wait_for(lambda: any(tmp_path.glob("started-*")), "the invocation to start")
        [started] = tmp_path.glob("started-*")
        environment = int(started.name.removeprefix("started-"))
        assert alive(environment)
    finally:
        poller.send_signal(signal.SIGKILL)
        poller.wait()

    wait_for(lambda: not alive(environment), "the orphaned environment to end")
    assert not (tmp_path / f"continued-{environment}").exists()
