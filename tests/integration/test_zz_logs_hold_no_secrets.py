"""Runs last in the integration tier: nothing it logged may contain credentials."""

from __future__ import annotations

from tests.secret_scan import SCAN


def test_integration_logs_hold_no_access_keys_secrets_or_session_tokens() -> None:
    """GIVEN the captured stdout, stderr and logs of every integration test run before this one
    (the worker assumes roles and handles temporary credentials throughout)
    WHEN they are scanned for access key ids, secret keys and session tokens
    THEN none is found, and the scan did see the suite's output."""
    assert SCAN.sections > 0, "no integration output was scanned: run the whole tier"
    assert SCAN.findings == []
