"""A property-based run over the whole API (issue 13 item 8): schemathesis reads the app's
``/openapi.json`` and sends generated requests to every operation it lists, so routes added
later are covered without a change here. On SQLite and on Postgres, each a real server
process with a worker (as ``threadloom dev``), and an admin key of every namespace, so the
generated ``X-Namespace`` values reach the store too.

What must hold for every request: no 5xx, every 4xx is JSON ``{"code", "message"}``
(runtime.md "Errors and limits"), and the answer has the content type and schema the document
declares. The request is sent with a valid key; what odd keys get is
:mod:`test_errors`' business.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from harness import Server, served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from threadloom.server.auth import create_key

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 40  # per operation: ~40 operations x 2 stores, about a minute a store


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest) -> Iterator[tuple[Server, str]]:
    """A server process with a worker, on SQLite or Postgres, and an all-namespace admin key."""
    with served(request.param, "tl-schemathesis", factory="_worker_app:create") as running:
        _, key = create_key(running.open_store(), "*", "admin", name="schemathesis")
        yield running, key


def error_body(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx is JSON ``{"code", "message"}`` with a non-empty code and message."""
    if not 400 <= response.status_code < 500:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} with content type {content_type!r}: {response.text[:200]}")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"code", "message"}, response.text[:300]
    assert isinstance(body["code"], str) and body["code"], response.text[:300]
    assert isinstance(body["message"], str) and body["message"], response.text[:300]
    assert "Traceback" not in response.text, response.text[:300]


def documented_body(ctx: Any, response: schemathesis.Response,
                    case: schemathesis.Case) -> bool | None:
    """The body is what the document declares for the status (an SSE stream: each event),
    unless the request chose a subset of the fields (``select``, as LangGraph's search)."""
    if isinstance(case.body, dict) and case.body.get("select"):
        return None
    return response_schema_conformance(ctx, response, case)


# no 5xx; every 4xx the error body; and what a route answers is what the document says it
# answers (content type and body)
CHECKS = [not_a_server_error, error_body, content_type_conformance, documented_body]


def _existing_ids(server: Server, prefix: str) -> list[dict[str, str]]:
    """Threads with a finished, an interrupted and a queued-behind run: the path parameters
    of objects that exist, so that generated requests reach past the lookups."""
    known: list[dict[str, str]] = []
    with server.http() as http:
        for graph, values in (("seed_chat", {"messages": ["hi"]}),
                              ("review", {"draft": "essay"}),
                              ("seed_loop", {"step": 0, "done": False})):
            thread_id = f"{prefix}-{graph}"
            assert http.post("/threads", json={"thread_id": thread_id}).status_code == 200
            waited = http.post(f"/threads/{thread_id}/runs/wait",
                               json={"assistant_id": graph, "input": values})
            assert waited.status_code == 200, waited.text
            run_id = http.get(f"/threads/{thread_id}/runs").json()[0]["run_id"]
            state = http.get(f"/threads/{thread_id}/state").json()
            checkpoint_id = state["checkpoint"]["checkpoint_id"]
            known.append({"thread_id": thread_id, "run_id": run_id, "assistant_id": graph,
                          "checkpoint_id": checkpoint_id})
    return known


def test_no_server_errors(live: tuple[Server, str]) -> None:
    """Every operation of ``/openapi.json``, with valid and invalid generated requests."""
    server, key = live
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1
        known_ids = _existing_ids(server, f"st{operations}")  # fresh: an operation deletes
        strategies = [operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE)]
        for known in known_ids:  # also at ids that exist, to get past the 404s
            names = set(re.findall(r"{(\w+)}", operation.path))
            if names and names <= set(known):
                fixed = {name: known[name] for name in names}
                strategies.append(operation.as_strategy(GenerationMode.POSITIVE,
                                                        path_parameters=fixed))
        strategy = st.one_of(*strategies)

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            headers = {name: value for name, value in (case.headers or {}).items()
                       if name.lower() != "x-api-key"}
            headers["X-API-Key"] = key
            case.headers = headers
            response = case.call(timeout=60)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # (schemathesis's failures are groups)
            # every operation runs; the failures are reported together
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 40  # the schema lists the API's operations (not just health routes)
    assert not failures, "\n\n".join(failures)
