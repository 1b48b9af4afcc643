"""Tenants against a real server process (runtime.md "Auth, namespaces, roles"): a key of
tenant B, with every role, tries to read, infer or overwrite tenant A's threads, runs and keys
through every route of the API (taken from ``/openapi.json``, so a new route is tried too) and
gets exactly what it would get for ids that exist nowhere; A's data is unchanged afterwards;
and the same ids in two tenants stay two objects."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from harness import Server

from threadloom.server.auth import create_key

OPEN = ("/ok", "/ready", "/metrics", "/docs", "/openapi.json", "/dashboard", "/")


class Tenant:
    """A namespace with a thread (state and two runs: one cancelled, one pending) and an
    admin key, made through the API."""

    def __init__(self, server: Server, name: str) -> None:
        self.namespace = f"{name}-{uuid.uuid4().hex[:8]}"
        record, self.key = create_key(server.open_store(), self.namespace, "admin")
        self.key_id = record.key_id
        self.thread_id = f"t-{uuid.uuid4().hex[:8]}"
        with server.http(api_key=self.key) as http:
            http.post("/threads", json={"thread_id": self.thread_id,
                                        "metadata": {"graph_id": "seed_chat", "owner": name}})
            update = http.post(f"/threads/{self.thread_id}/state",
                               json={"values": {"messages": [f"{name} secret"]}})
            self.checkpoint_id = update.json()["checkpoint"]["checkpoint_id"]
            run = http.post(f"/threads/{self.thread_id}/runs",
                            json={"assistant_id": "seed_chat", "input": {"messages": ["a"]}})
            self.run_id = run.json()["run_id"]
            http.post(f"/threads/{self.thread_id}/runs/{self.run_id}/cancel")
            pending = http.post(f"/threads/{self.thread_id}/runs", json={
                "assistant_id": "seed_chat", "input": {"messages": ["b"]}})
            self.pending_id = pending.json()["run_id"]

    def snapshot(self, server: Server) -> list[Any]:
        """Everything of the tenant a route could change, as its own key reads it."""
        with server.http(api_key=self.key) as http:
            tid = self.thread_id
            thread = http.get(f"/threads/{tid}").json()
            thread.pop("updated_at", None)
            runs = sorted((r["run_id"], r["status"])
                          for r in http.get(f"/threads/{tid}/runs").json())
            return [thread, http.get(f"/threads/{tid}/state").json()["values"], runs,
                    len(http.get(f"/threads/{tid}/history").json()),
                    [(k["key_id"], k["revoked_at"]) for k in
                     http.get(f"/v0/namespace/{self.namespace}/keys").json()["keys"]]]


@pytest.fixture(scope="module")
def tenants(server: Server) -> tuple[Tenant, Tenant]:
    return Tenant(server, "ten-a"), Tenant(server, "ten-b")


def _routes(server: Server) -> list[tuple[str, str]]:
    with server.http(api_key="") as http:
        paths = http.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, methods in paths.items() for method in methods
            if path not in OPEN and not path.startswith("/assistants")]  # graphs are shared


def _ids(victim: Tenant) -> dict[str, str]:
    return {"ns": victim.namespace, "namespace": victim.namespace,
            "thread_id": victim.thread_id, "run_id": victim.run_id,
            "checkpoint_id": victim.checkpoint_id, "key_id": victim.key_id,
            "graph": "seed_chat"}


_NOWHERE = {"ns": "ns-nowhere", "namespace": "ns-nowhere", "thread_id": "t-nowhere",
            "run_id": "r-nowhere", "checkpoint_id": "1f0000000000000000000000000000c0",
            "key_id": "knowhere000000000", "graph": "seed_chat"}


def _request(http: httpx.Client, method: str, path: str,
             ids: dict[str, str]) -> tuple[int, str, str]:
    filled = re.sub(r"\{([^}]+)\}", lambda m: ids.get(m[1], "x-nowhere"), path)
    body: Any = {
        "PATCH": {"metadata": {"owner": "intruder"}},
        "POST": {"assistant_id": "seed_chat", "input": {"messages": ["intruder"]},
                 "values": {"messages": ["intruder"]}, "role": "admin",
                 "checkpoint": {"checkpoint_id": ids["checkpoint_id"]},
                 "run_id": ids["run_id"], "run_ids": [ids["run_id"]],
                 "thread_id": ids["thread_id"], "thread_ids": [ids["thread_id"]]},
    }.get(method)
    response = http.request(method, filled, json=body)
    assert response.status_code < 500, (method, filled, response.text)
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    message = payload.get("message", "") if isinstance(payload, dict) else ""
    code = payload.get("code", "") if isinstance(payload, dict) else ""
    for value in sorted(set(ids.values()), key=len, reverse=True):
        message = message.replace(value, "<id>")
    return response.status_code, code, message


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_another_tenants_ids_answer_as_ids_that_exist_nowhere(
    server: Server, tenants: tuple[Tenant, Tenant], role: str
) -> None:
    victim, intruder = tenants
    before = victim.snapshot(server)
    key = create_key(server.open_store(), intruder.namespace, role)[1]
    tried = 0
    with server.http(api_key=key) as http:
        for method, path in _routes(server):
            if "{" not in path:
                continue  # no id to aim with: see the tests below
            real = _request(http, method, path, _ids(victim))
            nowhere = _request(http, method, path, _NOWHERE)
            assert real == nowhere, (role, method, path)
            assert real[0] in (403, 404, 422), (role, method, path, real)
            tried += 1
    assert tried >= 20
    assert victim.snapshot(server) == before


def test_routes_without_ids_never_reach_another_tenant(
    server: Server, tenants: tuple[Tenant, Tenant]
) -> None:
    victim, intruder = tenants
    before = victim.snapshot(server)
    with server.http(api_key=intruder.key) as http:
        found = http.post("/threads/search", json={"limit": 1000}).json()
        assert victim.thread_id not in [t["thread_id"] for t in found]
        assert http.post("/threads/count", json={}).json() == len(found)
        assert http.post("/threads/search", json={
            "metadata": {"owner": "ten-a"}}).json() == []
        pruned = http.post("/threads/prune", json={"thread_ids": [victim.thread_id]})
        assert pruned.json() == {"pruned_count": 0}
        cancel = http.post("/runs/cancel", json={"thread_id": victim.thread_id,
                                                 "run_ids": [victim.pending_id]})
        assert cancel.status_code == 404 and cancel.json()["code"] == "not_found"
        assert http.post("/runs/cancel", json={"status": "all"}).status_code == 204
        me = http.get("/v0/me").json()
        assert me["namespace"] == intruder.namespace
        assert me["namespaces"] == [intruder.namespace]
        # X-Namespace does not move a one-namespace key
        moved = http.post("/threads/search", json={},
                          headers={"X-Namespace": victim.namespace})
        assert moved.status_code == 404 and moved.json()["code"] == "not_found"
    assert victim.snapshot(server) == before


def test_the_same_ids_in_two_tenants_stay_two_objects(
    server: Server, tenants: tuple[Tenant, Tenant]
) -> None:
    victim, intruder = tenants
    before = victim.snapshot(server)
    with server.http(api_key=intruder.key) as http:
        made = http.post("/threads", json={"thread_id": victim.thread_id,
                                           "metadata": {"owner": "ten-b"}})
        assert made.status_code == 200, made.text
        run = http.post(f"/threads/{victim.thread_id}/runs", json={
            "assistant_id": "seed_chat", "input": {"messages": ["b"]},
            "run_id": victim.run_id})
        assert run.status_code == 200, run.text
        assert run.json()["run_id"] == victim.run_id
        assert http.get(f"/threads/{victim.thread_id}").json()["metadata"]["owner"] == "ten-b"
        assert http.delete(f"/threads/{victim.thread_id}").status_code in (204, 409)
    assert victim.snapshot(server) == before


def test_an_all_namespace_key_acts_where_x_namespace_says(
    server: Server, tenants: tuple[Tenant, Tenant]
) -> None:
    victim, _ = tenants
    key = create_key(server.open_store(), "*", "viewer")[1]
    with server.http(api_key=key) as http:
        assert http.get(f"/threads/{victim.thread_id}").status_code == 404  # in default
        there = http.get(f"/threads/{victim.thread_id}",
                         headers={"X-Namespace": victim.namespace})
        assert there.status_code == 200 and there.json()["metadata"]["owner"] == "ten-a"
        assert http.get("/v0/me", headers={"X-Namespace": victim.namespace}).json() == {
            "namespace": victim.namespace, "role": "viewer", "namespaces": ["*"],
            "key_id": http.get("/v0/me").json()["key_id"]}
