"""Choosing benchmarks by name (``python -m fanout.bench.run --only``)."""

from __future__ import annotations

import pytest

from fanout.bench.b7_fairness import _p95
from fanout.bench.run import _selection


def test_names_are_matched_whatever_their_case_and_run_in_suite_order() -> None:
    assert _selection("b7, b2-MULTI,B1") == ["B1", "B2-multi", "B7"]


def test_every_benchmark_runs_when_none_is_named() -> None:
    assert _selection(None)[:3] == ["B1", "B2", "B2-multi"]
    assert "B7" in _selection("")


def test_an_unknown_name_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(SystemExit, match=r"unknown benchmark.*B9.*choose from B1, B2, B2-multi"):
        _selection("B1,B9")


def test_the_95th_percentile_is_a_measured_value_not_an_interpolation() -> None:
    assert _p95([float(n) for n in range(1, 21)]) == 19.0
    assert _p95([3.0]) == 3.0
