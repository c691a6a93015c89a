"""Benchmarks of the fanout worker against the embedded emulator (``make bench``).

Run from the repository root: ``python -m fanout.bench.run [--only B1,B3] [--quick]``.
Results go to ``bench/results/latest.md`` and ``bench/results/latest.json``.
"""
