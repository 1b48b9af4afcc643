"""Roles against every route that changes something (runtime.md "Auth, namespaces, roles"):
the routes come from the app's own route table, so a route added later is checked too (or
fails the classification test until it is listed in ``_audit.MUTATIONS`` or ``READS``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from _app import build
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from harness import API_KEY

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.server._audit import MUTATIONS, READS, route_key
from threadloom.server.auth import ROLES, Role, create_key

CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every API route of the app, ``(method, path template)``, included routers too."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.extend((method, prefix + route.path) for method in sorted(route.methods))
            elif hasattr(route, "original_router"):  # FastAPI's included router
                walk(route.original_router.routes, prefix + route.include_context.prefix)

    walk(client.app.routes, "")  # type: ignore[attr-defined]
    assert len(found) > 40
    return found


def _mutations(client: TestClient) -> list[tuple[str, str, Role]]:
    return [(method, path, MUTATIONS[route_key(method, path)][1])
            for method, path in _routes(client) if route_key(method, path) in MUTATIONS]


def _fill(path: str) -> str:
    """The path with its parameters filled: the namespace is the key's, ids name nothing."""
    path = re.sub(r"\{(ns|namespace)\}", "default", path)
    return re.sub(r"\{[^}]+\}", "no-such-id", path)


def _body(path: str) -> object:
    return [] if path == "/runs/batch" else {}


@pytest.fixture
def client(store: RuntimeStore) -> Iterator[TestClient]:
    with TestClient(build(store, API_KEY)) as made:
        yield made


@pytest.fixture
def keys(store: RuntimeStore) -> dict[str, str]:
    made = {role: create_key(store, "default", role)[1] for role in ROLES}
    made["other-admin"] = create_key(store, "other", "admin")[1]
    return made


def test_every_changing_route_is_classified(client: TestClient) -> None:
    changing = [(m, p) for m, p in _routes(client) if m in CHANGING]
    unlisted = [(m, p) for m, p in changing
                if route_key(m, p) not in MUTATIONS and route_key(m, p) not in READS]
    assert unlisted == [], "list these routes in _audit.MUTATIONS or READS"
    assert len(_mutations(client)) >= 19  # the LangGraph routes and the key routes at least


def test_every_role_against_every_mutating_route(client: TestClient,
                                                  keys: dict[str, str]) -> None:
    checked = 0
    for method, path, needed in _mutations(client):
        for role in ROLES:
            response = client.request(method, _fill(path), json=_body(path),
                                       headers={"X-API-Key": keys[role]})
            allowed = ROLES.index(role) >= ROLES.index(needed)
            where = (role, method, path, response.status_code, response.text[:200])
            assert response.status_code < 500, where
            assert response.status_code != 401, where
            if allowed:
                assert response.status_code != 403, where
            else:
                assert response.status_code == 403, where
                assert response.json()["code"] == "forbidden", where
            checked += 1
    assert checked == 3 * len(_mutations(client))


def test_no_key_or_a_revoked_key_changes_nothing(client: TestClient, store: RuntimeStore,
                                                 keys: dict[str, str]) -> None:
    record, key = create_key(store, "default", "admin")
    assert store.revoke_key(record.key_id)
    for method, path, _ in _mutations(client):
        for headers in ({}, {"X-API-Key": key}, {"X-API-Key": keys["admin"] + "x"}):
            response = client.request(method, _fill(path), json=_body(path), headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["code"] == "unauthorized"


def test_a_key_of_another_namespace_gets_404_before_its_role_is_looked_at(
    client: TestClient, store: RuntimeStore
) -> None:
    viewer_elsewhere = create_key(store, "other", "viewer")[1]
    for method, path in _routes(client):
        if not path.startswith("/v0/namespace/"):
            continue
        response = client.request(method, _fill(path), json=_body(path),
                                  headers={"X-API-Key": viewer_elsewhere})
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"


def test_me_describes_the_key(client: TestClient, store: RuntimeStore) -> None:
    for namespace, role in [("default", "viewer"), ("tenant-a", "operator"), ("*", "admin")]:
        record, key = create_key(store, namespace, role)
        answer = client.get("/v0/me", headers={"X-API-Key": key})
        assert answer.status_code == 200
        acting = "default" if namespace == "*" else namespace
        assert answer.json() == {"namespace": acting, "role": role, "namespaces": [namespace],
                                 "key_id": record.key_id}
    _, key = create_key(store, "*", "viewer")
    answer = client.get("/v0/me", headers={"X-API-Key": key, "X-Namespace": "tenant-b"})
    assert answer.json()["namespace"] == "tenant-b"
    assert client.get("/v0/me").status_code == 401


def test_keys_over_http(client: TestClient, store: RuntimeStore) -> None:
    admin = {"X-API-Key": create_key(store, "tenant-a", "admin")[1]}
    made = client.post("/v0/namespace/tenant-a/keys", json={"role": "operator"},
                       headers=admin)
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    created = made.json()
    new = {"X-API-Key": created["key"]}
    assert client.get("/v0/me", headers=new).json()["role"] == "operator"  # at once
    listed = client.get("/v0/namespace/tenant-a/keys", headers=admin).json()
    assert listed["namespace"] == "tenant-a" and listed["count"] == 2
    item = next(k for k in listed["keys"] if k["key_id"] == created["key_id"])
    assert item["role"] == "operator" and item["revoked_at"] is None
    assert item["last_used_at"] is not None  # it was used just now
    assert created["key"] not in made.text.replace(f'"key":"{created["key"]}"', "")
    assert created["key"] not in str(listed)
    assert client.post("/v0/namespace/tenant-a/keys", json={"role": "root"},
                       headers=admin).status_code == 422
    # a key of another namespace is answered as a missing one, and stays valid
    elsewhere, _ = create_key(store, "tenant-b", "viewer")
    gone = client.delete(f"/v0/namespace/tenant-a/keys/{elsewhere.key_id}", headers=admin)
    missing = client.delete("/v0/namespace/tenant-a/keys/knosuchkey", headers=admin)
    assert gone.status_code == missing.status_code == 404
    assert gone.json()["code"] == missing.json()["code"] == "not_found"
    assert store.get_key(elsewhere.key_id).revoked_at is None  # type: ignore[union-attr]
    revoked = client.delete(f"/v0/namespace/tenant-a/keys/{created['key_id']}", headers=admin)
    assert revoked.status_code == 204
    assert client.get("/v0/me", headers=new).status_code == 401  # refused at once


def test_a_one_namespace_key_cannot_act_elsewhere_with_x_namespace(
    client: TestClient, store: RuntimeStore
) -> None:
    key = create_key(store, "tenant-a", "admin")[1]
    for method, path, body in [("GET", "/v0/me", None), ("POST", "/threads", {}),
                               ("POST", "/threads/search", {}), ("POST", "/runs/wait", {})]:
        response = client.request(method, path, json=body,
                                  headers={"X-API-Key": key, "X-Namespace": "tenant-b"})
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == "not_found"
    assert store.list_threads(namespace="tenant-b") == []
    everywhere = create_key(store, "*", "admin")[1]
    for header in ("x" * 300, "*", "a/b"):
        for sent in (key, everywhere):
            # a namespace that cannot exist is not found, like one that does not
            bad = client.get("/v0/me", headers={"X-API-Key": sent, "X-Namespace": header})
            assert bad.status_code == 404 and bad.json()["code"] == "not_found"
