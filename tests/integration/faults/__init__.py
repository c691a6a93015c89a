"""Fault injection: the promise "every job ends exactly once, no side effect twice" under
duplicate deliveries, concurrent workers, denied and flaky AssumeRole, throttling storms, 5xx
bursts, function timeouts, a SIGKILLed worker and poison messages.

- ``proxy``: the fault layer, an HTTP proxy in front of the emulator (rules, counters);
- ``harness``: workloads and the bookkeeping of how every job ended (``verify``);
- ``tuning``: shorter waits for the worker under test (the init hook of its environments);
  ``runner``: a worker process, and how every invocation runs (in an execution environment's
  process, killed at the function's timeout); ``handlers``: the real handler, wrapped;
- ``test_scenarios``: the scenarios; ``test_findings``: the bugs this suite found, fixed
  since, kept as regression tests.

``pytest tests/integration/faults`` ends with a table of every scenario's figures.
"""
