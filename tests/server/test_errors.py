"""The error contract (runtime.md "Errors and limits"): every error on every route is JSON
``{"code", "message"}`` with a stable code, a 4xx for anything a client got wrong, and never
a traceback. In-process for the many small cases; the body limit and odd ids also against a
real server process."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient
from graphs import compiled
from harness import Server

from threadloom import errors as core_errors
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.server import Settings, create_app
from threadloom.server.auth import create_key, ensure_key


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    """``response`` is the error ``status`` with ``code``, in the one error shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return dict(body)


def test_unknown_route_and_method(app_client: TestClient) -> None:
    assert_error(app_client.get("/no/such/route"), 404, "not_found")
    assert_error(app_client.put("/threads"), 405, "method_not_allowed")
    assert_error(app_client.get("/threads/search"), 404, "not_found")  # a thread "search"
    assert_error(app_client.delete("/assistants/search"), 405, "method_not_allowed")


def test_malformed_and_invalid_bodies(app_client: TestClient) -> None:
    for body in (b"{", b"not json", b"[1, 2"):
        assert_error(app_client.post("/threads", content=body,
                                     headers={"Content-Type": "application/json"}),
                     422, "invalid_request")
    bad = [
        ("/threads", {"if_exists": "replace"}),
        ("/threads", {"metadata": ["not", "an", "object"]}),
        ("/threads", {"ttl": 60}),
        ("/threads/search", {"limit": "many"}),
        ("/threads/search", {"limit": 0}),
        ("/threads/search", {"offset": -1}),
        ("/threads/search", {"status": "sleeping"}),
        ("/threads/search", {"select": ["password"]}),
        ("/threads/count", {"metadata": 3}),
        ("/assistants/search", {"sort_by": "colour"}),
        ("/assistants/count", {"graph_id": 7}),
    ]
    for path, body in bad:
        assert_error(app_client.post(path, json=body), 422, "invalid_request")
    thread = app_client.post("/threads", json={}).json()
    tid = thread["thread_id"]
    assert_error(app_client.post(f"/threads/{tid}/history", json={"limit": -3}),
                 422, "invalid_request")
    assert_error(app_client.get(f"/threads/{tid}/history", params={"limit": "x"}),
                 422, "invalid_request")
    assert_error(app_client.post(f"/threads/{tid}/state/checkpoint", json={}),
                 422, "invalid_request")
    assert_error(app_client.patch(f"/threads/{tid}", json={"metadata": "x"}),
                 422, "invalid_request")


def test_a_malformed_checkpoint_id_is_a_client_error(app_client: TestClient) -> None:
    made = app_client.post("/threads", json={"metadata": {"graph_id": "seed_chat"}}).json()
    tid = made["thread_id"]
    written = app_client.post(f"/threads/{tid}/state",
                              json={"values": {"messages": ["hi"]}, "as_node": "chat"})
    assert written.status_code == 200
    assert_error(app_client.get(f"/threads/{tid}/state/not-a-checkpoint"), 400,
                 "invalid_config")
    assert_error(app_client.get(f"/threads/{tid}/state/00000000000000ff"), 404,
                 "checkpoint_not_found")
    assert_error(app_client.post(f"/threads/{tid}/state/checkpoint",
                                 json={"checkpoint": {"checkpoint_ns": "sub:1"}}),
                 422, "invalid_request")


def test_body_over_the_limit(app_client: TestClient) -> None:
    big = json.dumps({"metadata": {"blob": "x" * (1024 * 1024)}})
    assert_error(app_client.post("/threads", content=big,
                                 headers={"Content-Type": "application/json"}),
                 413, "payload_too_large")


ODD_IDS = ["..", "...", "%2e%2e", "a b", "é-ü-中", "x" * 255, "<script>", "'; DROP TABLE x;--",
           "a%00b", "tab\there"]


@pytest.mark.parametrize("path", ["/threads/{}", "/threads/{}/state", "/threads/{}/history",
                                  "/threads/{}/export", "/assistants/{}",
                                  "/assistants/{}/graph"])
def test_odd_ids_are_client_errors(app_client: TestClient, path: str) -> None:
    for odd in [*ODD_IDS, "x" * 300, "../../etc/passwd"]:
        response = app_client.get(path.format(quote(odd, safe="")), follow_redirects=False)
        if response.request.url.path == "/":
            continue  # the client resolved "/threads/.." to "/" (the dashboard's redirect)
        assert 400 <= response.status_code < 500, (odd, response.text)
        assert set(response.json()) == {"code", "message"}
        assert "Traceback" not in response.text


def test_long_and_odd_ids_are_refused_or_unknown(app_client: TestClient) -> None:
    assert_error(app_client.get("/threads/" + "x" * 300), 422, "invalid_request")
    assert_error(app_client.post("/threads", json={"thread_id": "x" * 256}), 422,
                 "invalid_request")
    for bad in ("tab\there", "a/b", "../x"):
        assert_error(app_client.post("/threads", json={"thread_id": bad}), 422,
                     "invalid_request")
    for odd in ["x" * 255, "é-ü-中", "'; DROP TABLE x;--", "<script>"]:
        made = app_client.post("/threads", json={"thread_id": odd})
        assert made.status_code == 200, made.text
        assert app_client.get(f"/threads/{quote(odd, safe='')}").json()["thread_id"] == odd


def test_errors_of_a_real_server(server: Server) -> None:
    with server.http() as http:
        assert_error(http.get("/no/such/route"), 404, "not_found")
        assert_error(http.put("/threads"), 405, "method_not_allowed")
        assert_error(http.post("/threads", content=b"{",
                               headers={"Content-Type": "application/json"}),
                     422, "invalid_request")
        assert_error(http.post("/threads", content=b"x" * (1024 * 1024 + 1),
                               headers={"Content-Type": "application/json"}),
                     413, "payload_too_large")

        def chunks() -> bytes:
            return b'{"metadata": {"a": "' + b"y" * (1024 * 1024) + b'"}}'

        streamed = http.post("/threads", content=iter([chunks()]),
                             headers={"Content-Type": "application/json"})
        assert_error(streamed, 413, "payload_too_large")
        for odd in [*ODD_IDS, "x" * 300, "../x"]:
            response = http.get(f"/threads/{quote(odd, safe='')}/state")
            assert 400 <= response.status_code < 500, (odd, response.text)
            assert set(response.json()) == {"code", "message"}
        made = http.post("/threads", json={"thread_id": "é-" + "z" * 200})
        assert made.status_code == 200 and made.json()["thread_id"] == "é-" + "z" * 200


def test_refused_supersteps_create_no_thread(app_client: TestClient) -> None:
    step = {"updates": [{"values": {"messages": ["hi"]}, "as_node": "chat"}]}
    cases = [
        ({"thread_id": "s-1", "supersteps": [step]}, 400, "thread_has_no_graph"),
        ({"thread_id": "s-2", "metadata": {"graph_id": "nope"}, "supersteps": [step]}, 400,
         "thread_has_no_graph"),
        ({"thread_id": "s-3", "metadata": {"graph_id": "seed_chat"},
          "supersteps": [{"updates": step["updates"] * 2}]}, 422, "invalid_request"),
        ({"thread_id": "s-4", "metadata": {"graph_id": "seed_chat"},
          "supersteps": [{"updates": [{"command": {"jump": 1}, "as_node": "chat"}]}]},
         422, "invalid_request"),
    ]
    for body, status, code in cases:
        assert_error(app_client.post("/threads", json=body), status, code)
        assert_error(app_client.get(f"/threads/{body['thread_id']}"), 404, "not_found")
    made = app_client.post("/threads", json={
        "thread_id": "s-5", "metadata": {"graph_id": "seed_chat"},
        "supersteps": [{"updates": [{"command": {"update": {"messages": ["yo"]}},
                                     "as_node": "chat"}]}]})
    assert made.status_code == 200, made.text
    assert made.json()["values"] == {"messages": ["yo"]}


def test_huge_offsets_are_client_errors(app_client: TestClient) -> None:
    """An offset past what a store binds (64-bit) was a 500 (found by schemathesis)."""
    huge = 2**80
    made = app_client.post("/threads", json={}).json()
    assert_error(app_client.get(f"/threads/{made['thread_id']}/runs", params={"offset": huge}),
                 422, "invalid_request")
    for path in ("/threads/search", "/assistants/search"):
        assert_error(app_client.post(path, json={"offset": huge}), 422, "invalid_request")
    largest = app_client.post("/threads/search", json={"offset": 1_000_000_000})
    assert largest.status_code == 200 and largest.json() == []


# -- odd values in every path parameter of every route, and odd headers -----------------------

# (already percent-encoded for the URL): traversal, NUL, too long, encoded slashes, percent
# escapes that are not UTF-8 and a lone surrogate's (a bare ".." never reaches the server: the
# client resolves it, as every HTTP client does)
ODD_SEGMENTS = ["%2e%2e", "..%2F", "..%2F..%2Fetc%2Fpasswd", "%2F", "a%2Fb", "a%00b", "%00",
                "x" * 300, "%FF", "%C3%28", "%ED%A0%80", "a%0Ab", "%09", "%20", "%25",
                quote("é-ü-中" * 60, safe="")]


def route_table(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every operation of ``app`` that has path parameters, from
    its OpenAPI document (no route of the API is left out of it)."""
    return [(method.upper(), path) for path, operations in app.openapi()["paths"].items()
            if "{" in path for method in operations]


def odd_requests(routes: list[tuple[str, str]]) -> list[tuple[str, str, bool]]:
    """Each route once per odd segment in each of its path parameters (the others valid),
    and whether the odd one is an id (``*_id``: nothing has it, so a 4xx; another parameter,
    e.g. the subgraph namespace filter, may match nothing with a 200)."""
    requests = []
    for method, template in routes:
        names = re.findall(r"{(\w+)}", template)
        for odd_name in names:
            for odd in ODD_SEGMENTS:
                path = template
                for name in names:
                    value = odd if name == odd_name else _VALID.get(name, "x-1")
                    path = path.replace("{" + name + "}", value)
                requests.append((method, path, odd_name.endswith("_id")))
    return requests


_VALID = {"thread_id": "odd-thread", "assistant_id": "seed_chat"}
_BODY = {"assistant_id": "seed_chat", "input": {"messages": ["hi"]}}


def assert_client_errors(http: Any, routes: list[tuple[str, str]]) -> int:
    """Send every odd request; each answer is a 4xx error body. Returns how many were sent."""
    sent, wrong = 0, []
    for method, path, is_id in odd_requests(routes):
        body = _BODY if method in ("POST", "PUT", "PATCH") else None
        response = http.request(method, path, json=body)
        sent += 1
        if not is_id and response.status_code < 400:
            continue
        if not (400 <= response.status_code < 500
                and response.headers["content-type"].startswith("application/json")
                and set(response.json()) == {"code", "message"}
                and "Traceback" not in response.text):
            wrong.append(f"{method} {path[:80]}: {response.status_code} {response.text[:150]}")
    assert not wrong, "\n".join(wrong)
    return sent


def test_odd_path_parameters_on_every_route(app_client: TestClient) -> None:
    """Every route with a path parameter, from the app's route table (so routes added later
    are covered), with each odd value in each parameter: a 4xx error body, never a 5xx."""
    assert app_client.post("/threads", json={"thread_id": "odd-thread"}).status_code == 200
    routes = route_table(app_client.app)
    assert len(routes) >= 20
    assert assert_client_errors(app_client, routes) >= len(routes) * len(ODD_SEGMENTS)


def test_odd_path_parameters_of_a_real_server(server: Server) -> None:
    """The same against a server process (uvicorn decodes the path; Postgres refuses NUL)."""
    import _app

    with server.http() as http:
        assert http.post("/threads", json={"thread_id": "odd-thread"}).status_code == 200
        store = server.open_store()
        routes = route_table(_app.build(store, server.api_key))
        assert_client_errors(http, routes)


def test_malformed_run_ids_are_refused_before_the_store(app_client: TestClient) -> None:
    """A run id in a path is 1 to 255 printable characters (runtime.md), checked before the
    store sees it: Postgres refuses a NUL in text, which was a 500 ``store_error``."""
    assert app_client.post("/threads", json={"thread_id": "t-run-ids"}).status_code == 200
    for odd in ("a%00b", "%00", "x" * 256, "tab%09here"):
        for method, path in [("GET", "/threads/t-run-ids/runs/{}"),
                             ("DELETE", "/threads/t-run-ids/runs/{}"),
                             ("GET", "/threads/t-run-ids/runs/{}/join"),
                             ("GET", "/threads/t-run-ids/runs/{}/stream"),
                             ("POST", "/threads/t-run-ids/runs/{}/cancel")]:
            assert_error(app_client.request(method, path.format(odd)), 422, "invalid_request")
    assert_error(app_client.post("/runs/cancel", json={"thread_id": "t-run-ids",
                                                       "run_ids": ["a\x00b"]}),
                 422, "invalid_request")
    assert_error(app_client.get("/threads/t-run-ids/runs/" + "x" * 255), 404, "not_found")


def test_a_checkpoint_of_a_thread_without_one_is_not_an_empty_state(
        app_client: TestClient) -> None:
    """A thread with no graph yet has no checkpoints: ``GET .../state/{checkpoint_id}`` was a
    200 with an empty state for any id, also NUL or 300 characters."""
    assert app_client.post("/threads", json={"thread_id": "t-bare"}).status_code == 200
    for odd in ("a%00b", "x" * 300, "%FF", "not-a-checkpoint"):
        assert_error(app_client.get(f"/threads/t-bare/state/{odd}"), 400, "invalid_config")
    assert_error(app_client.get("/threads/t-bare/state/00000000000000ff"), 404,
                 "checkpoint_not_found")
    assert_error(app_client.post("/threads/t-bare/state/checkpoint",
                                 json={"checkpoint": {"checkpoint_id": "00000000000000ff"}}),
                 404, "checkpoint_not_found")
    latest = app_client.post("/threads/t-bare/state/checkpoint", json={"checkpoint": {}})
    assert latest.status_code == 200 and latest.json()["values"] == {}
    assert app_client.get("/threads/t-bare/state").json()["values"] == {}


def test_a_trailing_slash_is_an_unknown_route_not_a_redirect(app_client: TestClient) -> None:
    """An id of ``%2F`` (or a trailing slash) was a 307 redirect to the collection route."""
    for method, path in [("GET", "/threads/%2F"), ("DELETE", "/threads/%2F"),
                         ("GET", "/threads/"), ("POST", "/threads/search/"),
                         ("GET", "/assistants/..%2F")]:
        response = app_client.request(method, path, follow_redirects=False)
        assert_error(response, 404, "not_found")


# (legal header values: a control character such as DEL is refused by the HTTP server with a
# plain 400 before the app runs, and a blank value by the client)
ODD_KEYS: list[bytes] = ["é-clé-ü".encode("latin-1"), "clé-中".encode(), b"\xff\xfe\x80" * 8,
                         b"k" * 513, b"k" * 60000, b"%00" * 10, b"tl_" + b"a" * 40]
# not namespace names (1-64 printable characters without "/"; "*" is a key's, for all)
ODD_NAMESPACES: list[bytes] = [b"x" * 65, b"x" * 300, b"../default", b"a/b", b"*", b"a\tb",
                               "命名空间".encode()]  # as latin-1, C1 controls
# names, of namespaces that hold nothing
UNKNOWN_NAMESPACES: list[bytes] = [b"%00", "é".encode("latin-1"), "é".encode(), b"\xff\xfe",
                                   b"a b", b".."]


def assert_odd_headers(http: Any, all_namespace_key: str) -> None:
    """Odd ``X-API-Key`` values are 401; odd ``X-Namespace`` values of an all-namespace key
    reach no namespace (404) or act in ``default`` (an empty one); none is a 5xx."""
    routes = [("GET", "/threads/t-headers"), ("POST", "/threads/search"),
              ("GET", "/threads/t-headers/runs/r-1"), ("POST", "/threads")]
    for key in ODD_KEYS:
        for method, path in routes:
            response = http.request(method, path, json={}, headers={"X-API-Key": key})
            assert_error(response, 401, "unauthorized")
    for namespace in ODD_NAMESPACES:
        headers = {"X-API-Key": all_namespace_key.encode(), "X-Namespace": namespace}
        for method, path in routes:
            response = http.request(method, path, json={}, headers=headers)
            assert_error(response, 404, "not_found")
    for namespace in UNKNOWN_NAMESPACES:
        headers = {"X-API-Key": all_namespace_key.encode(), "X-Namespace": namespace}
        assert_error(http.get("/threads/t-headers", headers=headers), 404, "not_found")
        assert http.post("/threads/search", json={}, headers=headers).json() == []
    for namespace in (b"", b"default"):
        headers = {"X-API-Key": all_namespace_key.encode(), "X-Namespace": namespace}
        found = http.get("/threads/t-headers", headers=headers)
        assert found.status_code == 200, (namespace, found.text)


def test_odd_keys_and_namespaces(app_client: TestClient, store: Any) -> None:
    _, key = create_key(store, "*", "admin")
    assert app_client.post("/threads", json={"thread_id": "t-headers"}).status_code == 200
    assert_odd_headers(app_client, key)


def test_odd_keys_and_namespaces_of_a_real_server(server: Server) -> None:
    _, key = create_key(server.open_store(), "*", "admin")
    with server.http() as http:
        http.post("/threads", json={"thread_id": "t-headers"})
        assert_odd_headers(http, key)


# -- nothing internal reaches a client ------------------------------------------------------

SECRET = "/var/lib/secret/app.db: SELECT key_hash FROM api_keys password=hunter2"


class FailingStore:
    """A store whose every method but the key lookup raises ``error`` (as a store whose
    database broke under a running server)."""

    def __init__(self, inner: RuntimeStore, error: BaseException) -> None:
        self._inner = inner
        self._error = error

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name == "get_key" or not callable(value):
            return value

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self._error

        return fail


@pytest.mark.parametrize("error, status, code", [
    (core_errors.StoreError(SECRET), 500, "store_error"),
    (core_errors.StoreCorruptError(SECRET), 500, "store_corrupt"),
    (core_errors.StoreUnavailableError(SECRET), 503, "store_unavailable"),
    (sqlite3.OperationalError(SECRET), 500, "internal_error"),
    (RuntimeError(SECRET), 500, "internal_error"),
    (KeyError(SECRET), 500, "internal_error"),
])
def test_store_failures_reach_the_client_as_a_generic_error(
        store: RuntimeStore, api_key: str, error: BaseException, status: int, code: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Whatever a store raises, on every route that reaches it: the status and a generic
    message; the error's text (SQL, paths, secrets) and traceback go to the server's log."""
    ensure_key(store, api_key)
    app = create_app(FailingStore(store, error), compiled(store),  # type: ignore[arg-type]
                     Settings(worker_stale_after=None))
    run = {"assistant_id": "seed_chat", "input": {"messages": ["hi"]}}
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/threads/t-1", None), ("POST", "/threads/search", {}), ("POST", "/threads", {}),
        ("GET", "/threads/t-1/state", None), ("GET", "/threads/t-1/runs/r-1", None),
        ("POST", "/threads/t-1/runs/wait", run), ("POST", "/runs/wait", run),
        ("POST", "/threads/count", {}), ("POST", "/runs/cancel", {"status": "pending"})]
    with TestClient(app, headers={"X-API-Key": api_key},
                    raise_server_exceptions=False) as client:
        for method, path, body in requests:
            caplog.clear()
            response = client.request(method, path, json=body)
            assert_error(response, status, code)
            assert "hunter2" not in response.text and "/var/lib" not in response.text
            assert "SELECT" not in response.text
            logged = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
            if status >= 500:
                assert "hunter2" in logged, (method, path)  # the operator can see what failed


def test_the_openapi_document_declares_the_error_body(app_client: TestClient) -> None:
    """Every operation behind a key declares 401/403/404/422 with the ``ErrorBody`` schema
    (not FastAPI's ``{"detail": [...]}``), and the answers match it."""
    document = app_client.get("/openapi.json").json()
    error_schema = document["components"]["schemas"]["ErrorBody"]
    assert set(error_schema["required"]) == {"code", "message"}
    assert "HTTPValidationError" not in json.dumps(document)
    keyed = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            if "x-api-key" not in headers:
                assert path in ("/ok", "/ready"), path
                continue
            keyed += 1
            for status in ("401", "403", "404", "422"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (
                    method, path, status)
    assert keyed >= 38
    answers = [app_client.post("/threads", json={"metadata": 3}),
               app_client.get("/threads/nope"),
               app_client.get("/threads/nope", headers={"X-API-Key": "wrong-key-0123456789"})]
    for answer in answers:
        assert answer.status_code in (401, 404, 422)
        jsonschema.validate(answer.json(), error_schema)


def test_run_config_and_checkpoint_are_checked_when_the_run_is_created(
        app_client: TestClient) -> None:
    """A ``config.configurable`` that is not an object was a 500 (``dict(3)``); a bad
    ``recursion_limit`` or checkpoint id made a run that the worker could not start and that
    stayed ``pending`` for ever (its ``wait`` answered at once, with the thread's old state)."""
    made = app_client.post("/threads", json={"thread_id": "t-config",
                                             "metadata": {"graph_id": "seed_chat"}})
    assert made.status_code == 200, made.text
    written = app_client.post("/threads/t-config/state",
                              json={"values": {"messages": ["hi"]}, "as_node": "chat"})
    assert written.status_code == 200, written.text
    checkpoint_id = app_client.get("/threads/t-config/state").json()["checkpoint_id"]
    base = {"assistant_id": "seed_chat", "input": {"messages": ["again"]}}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"config": {"configurable": 3}}, 422, "invalid_request"),
        ({"config": {"configurable": ["a"]}}, 422, "invalid_request"),
        ({"config": {"tags": "a"}}, 422, "invalid_request"),
        ({"config": {"recursion_limit": "x"}}, 400, "invalid_config"),
        ({"config": {"recursion_limit": 0}}, 400, "invalid_config"),
        ({"checkpoint_id": "zzz"}, 400, "invalid_config"),
        ({"checkpoint": {"checkpoint_id": 5}}, 400, "invalid_config"),
        ({"config": {"configurable": {"checkpoint_id": "a\x00b"}}}, 400, "invalid_config"),
        ({"checkpoint_id": "00000000000000ff"}, 404, "checkpoint_not_found"),
    ]
    for extra, status, code in cases:
        for path in ("/threads/t-config/runs", "/threads/t-config/runs/wait", "/runs"):
            assert_error(app_client.post(path, json={**base, **extra}), status, code)
    assert app_client.get("/threads/t-config/runs").json() == []  # nothing refused was queued
    forked = app_client.post("/threads/t-config/runs",
                             json={**base, "checkpoint_id": checkpoint_id,
                                   "config": {"recursion_limit": 5, "tags": ["x"]}})
    assert forked.status_code == 200, forked.text


def test_the_streaming_routes_are_documented_as_event_streams(app_client: TestClient) -> None:
    """They answer ``text/event-stream``; the document said JSON (found by schemathesis)."""
    paths = app_client.get("/openapi.json").json()["paths"]
    for path, method in [("/threads/{thread_id}/runs/stream", "post"),
                         ("/runs/stream", "post"),
                         ("/threads/{thread_id}/runs/{run_id}/stream", "get")]:
        assert set(paths[path][method]["responses"]["200"]["content"]) == {"text/event-stream"}


def test_bodies_only_python_takes_as_json_are_refused_and_nothing_is_stored(
        app_client: TestClient) -> None:
    """JSON's ``"\\ud800"`` parses to a string that cannot be encoded: it was a 500, and
    ``PATCH`` stored it first, so every later read of the thread was a 500 too. ``NaN``,
    ``Infinity`` and ``1e999`` are not JSON: Postgres refused them (a 500, after the thread
    was created), SQLite stored ``null``."""
    made = app_client.post("/threads", json={"thread_id": "t-uni", "metadata": {"k": "v"}})
    assert made.status_code == 200
    json_type = {"Content-Type": "application/json"}
    for method, path, raw in [
        ("POST", "/threads", rb'{"metadata": {"a": "\ud800"}}'),
        ("POST", "/threads", rb'{"thread_id": "x\udfff"}'),
        ("PATCH", "/threads/t-uni", rb'{"metadata": {"\ud800": 1}}'),
        ("POST", "/threads/search", rb'{"metadata": {"a": "x\udbff"}}'),
        ("POST", "/threads/t-uni/runs", rb'{"assistant_id": "seed_chat", "input": "\ud800"}'),
        ("POST", "/threads/t-uni/runs/wait",
         rb'{"assistant_id": "seed_chat", "input": {"messages": ["\udc00"]}}'),
        ("POST", "/threads", rb'{"thread_id": "t-nan", "metadata": {"a": NaN}}'),
        ("POST", "/threads", rb'{"thread_id": "t-nan", "metadata": {"a": -Infinity}}'),
        ("POST", "/threads", rb'{"thread_id": "t-nan", "metadata": {"a": 1e999}}'),
        ("PATCH", "/threads/t-uni", rb'{"metadata": {"k": Infinity}}'),
        ("POST", "/threads/t-uni/runs", rb'{"assistant_id": "seed_chat", "input": [NaN]}'),
        ("POST", "/threads/t-uni/runs/wait",  # the fast lane's parser takes NaN too
         rb'{"assistant_id": "seed_chat", "input": {"messages": [NaN]}}'),
        ("POST", "/runs/wait", rb'{"assistant_id": "seed_chat", "input": {"x": 1e400}}'),
    ]:
        assert_error(app_client.request(method, path, content=raw, headers=json_type),
                     422, "invalid_request")
    kept = app_client.get("/threads/t-uni")
    assert kept.status_code == 200 and kept.json()["metadata"]["k"] == "v"
    assert app_client.get("/threads/t-uni/runs").json() == []
    assert_error(app_client.get("/threads/t-nan"), 404, "not_found")
    numbers = app_client.patch("/threads/t-uni", headers=json_type,
                               content=b'{"metadata": {"n": 1e300, "s": "NaN Infinity e999"}}')
    assert numbers.status_code == 200 and numbers.json()["metadata"]["n"] == 1e300
    paired = app_client.patch("/threads/t-uni", content=rb'{"metadata": {"e": "\ud83d\ude00"}}',
                              headers=json_type)  # a pair is one character
    assert paired.status_code == 200, paired.text
    assert app_client.get("/threads/t-uni").json()["metadata"]["e"] == "\U0001F600"
    literal = app_client.patch("/threads/t-uni", content=rb'{"metadata": {"b": "\\ud800"}}',
                               headers=json_type)  # an escaped backslash, then text
    assert literal.status_code == 200 and literal.json()["metadata"]["b"] == "\\ud800"
