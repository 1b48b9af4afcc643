"""``THREADLOOM_REQUIRE_SERVICES=1`` (CI) turns every missing service into a failure.

A test that needs PgBouncer or the right to restart Postgres, run in a child pytest whose
``PATH`` holds neither ``pgbouncer`` nor ``pg_ctlcluster``, must fail with the switch on and
skip with it off: a CI machine missing them must not read as a row of skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = {
    "pgbouncer": "tests/checkpoint/test_postgres.py::TestPostgresStoreBehindPgBouncer"
    "::test_setup_is_idempotent",
    "restart": "tests/checkpoint/test_postgres_lost.py::test_a_server_restart_is_survived",
}


def _run_child(test: str, required: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent)  # no pgbouncer, no pg_ctlcluster
    env.pop("THREADLOOM_REQUIRE_SERVICES", None)
    if required:
        env["THREADLOOM_REQUIRE_SERVICES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.postgres
@pytest.mark.parametrize("service", sorted(TESTS))
def test_a_missing_service_fails_when_services_are_required(
    service: str, postgres_url: str
) -> None:
    required = _run_child(TESTS[service], required=True)
    assert required.returncode == 1, required.stdout + required.stderr
    assert "THREADLOOM_REQUIRE_SERVICES=1 but" in required.stdout, required.stdout
    assert "1 passed" not in required.stdout and "skipped" not in required.stdout
    assert ("1 failed" in required.stdout) != ("1 error" in required.stdout), required.stdout

    optional = _run_child(TESTS[service], required=False)
    assert optional.returncode == 0, optional.stdout + optional.stderr
    assert "1 skipped" in optional.stdout, optional.stdout
