"""The conformance tests of a runtime store's administrative records: API keys, the audit log
(every change writes its event in its own transaction) and thread creation. Part of
:class:`~threadloom.testing.queue_conformance.QueueConformance`."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from threadloom.checkpoint.base import Commit
from threadloom.checkpoint.queue import (
    ApiKey,
    AuditEvent,
    RuntimeStore,
)
from threadloom.errors import (
    CheckpointConflictError,
    InvalidConfigError,
    RunConflictError,
    StoreError,
)
from threadloom.testing._queue_records import NS, pending, put, queued
from threadloom.testing._records import checkpoint


class AdminConformance:
    """API keys, the audit log and thread creation (mixed into ``QueueConformance``)."""

    def test_api_keys(self, store: RuntimeStore) -> None:
        store.create_key(ApiKey("k1", NS, "admin", b"\x00hash1", 100.0, name="ops"))
        store.create_key(ApiKey("k2", "*", "viewer", b"hash2", 200.0))
        store.create_key(ApiKey("k3", NS, "operator", b"hash3", 300.0))
        with pytest.raises(InvalidConfigError):
            store.create_key(ApiKey("k1", "other", "viewer", b"x", 1.0))
        key = store.get_key("k1")
        assert key == ApiKey("k1", NS, "admin", b"\x00hash1", 100.0, name="ops")
        assert store.get_key("nope") is None
        assert [k.key_id for k in store.list_keys()] == ["k3", "k2", "k1"]
        assert [k.key_id for k in store.list_keys(NS)] == ["k3", "k1"]
        assert [k.key_id for k in store.list_keys("*")] == ["k2"]
        store.touch_key("k1", 500.0)
        store.touch_key("k1", 400.0)  # late and out of order: kept at the latest
        store.touch_key("nope", 1.0)
        assert store.revoke_key("k1") and not store.revoke_key("nope")
        key = store.get_key("k1")
        assert key is not None and key.last_used_at == 500.0 and key.revoked_at is not None

    # -- the audit log --------------------------------------------------------------------

    def test_audit_events_are_written_with_their_change(self, store: RuntimeStore) -> None:
        def event(action: str, target: str, **fields: Any) -> AuditEvent:
            return AuditEvent(NS, action, target, key_id="kadmin", role="admin", **fields)

        store.create_key(ApiKey("k1", NS, "viewer", b"h", 1.0), audit=event("key.create", "k1"))
        with pytest.raises(InvalidConfigError):  # refused: no event
            store.create_key(ApiKey("k1", NS, "viewer", b"h", 1.0),
                             audit=event("key.create", "k1"))
        assert store.revoke_key("k1", audit=event("key.revoke", "k1"))
        assert not store.revoke_key("nope", audit=event("key.revoke", "nope"))
        record = pending("r1", "t1")
        store.enqueue(record, queued("r1", "t1"),
                      audit=event("run.create", "r1", run_id="r1", thread_id="t1"))
        with pytest.raises(RunConflictError):
            store.enqueue(pending("r1", "t1"), queued("r1", "t1"),
                          audit=event("run.create", "r1", run_id="r1", thread_id="t1"))
        assert store.request_cancel(NS, "r1", audit=event("run.cancel", "r1",
                                                          run_id="r1")) == "cancelled"
        assert store.request_cancel(NS, "r1", audit=event("run.cancel", "r1")) == "finished"
        assert store.request_cancel(NS, "nope", audit=event("run.cancel", "nope")) == "unknown"
        store.requeue(NS, "r1", audit=event("run.retry", "r1", run_id="r1"))
        store.request_cancel(NS, "r1")  # no event asked for: none written
        assert store.delete_run(NS, "r1", audit=event("run.delete", "r1", run_id="r1"))
        assert not store.delete_run(NS, "r1", audit=event("run.delete", "r1"))
        put(store, "r2", "t2")
        store.rollback_run(NS, "r2", audit=event("run.rollback", "r2", run_id="r2"))
        store.rollback_run(NS, "r2", audit=event("run.rollback", "r2"))  # gone: no event
        refused = store.append_audit(AuditEvent(NS, "thread.delete", "t9", "kview", "viewer",
                                                outcome="forbidden"))
        assert refused.id and refused.at > 0
        events, cursor = store.list_audit(NS)
        assert cursor is None
        assert [(e.action, e.target, e.outcome) for e in reversed(events)] == [
            ("key.create", "k1", "ok"), ("key.revoke", "k1", "ok"),
            ("run.create", "r1", "ok"), ("run.cancel", "r1", "cancelled"),
            ("run.cancel", "r1", "finished"), ("run.retry", "r1", "ok"),
            ("run.delete", "r1", "ok"), ("run.rollback", "r2", "ok"),
            ("thread.delete", "t9", "forbidden"),
        ]
        create = events[-3]
        assert (create.key_id, create.role, create.run_id, create.thread_id) == (
            "kadmin", "admin", "r1", "t1")
        assert len({e.id for e in events}) == len(events)
        assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
        assert events[0] == refused

    def test_runs_an_enqueue_cancels_are_logged_with_it(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        put(store, "r2", "t1")
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        assert claim.run_id == "r1"
        cancelled = store.enqueue(pending("r3", "t1"), queued("r3", "t1"), "interrupt",
                                  audit=AuditEvent(NS, "run.create", "r3", key_id="k1",
                                                   role="operator", run_id="r3",
                                                   thread_id="t1"))
        assert cancelled == ["r1", "r2"]
        events, _ = store.list_audit(NS)
        assert sorted((e.action, e.run_id, e.outcome, e.key_id) for e in events) == [
            ("run.cancel", "r1", "signalled", "k1"), ("run.cancel", "r2", "cancelled", "k1"),
            ("run.create", "r3", "ok", "k1")]
        assert all(e.thread_id == "t1" for e in events)

    def test_thread_changes_write_their_audit_event(self, store: RuntimeStore) -> None:
        store.commit([Commit("t1")])
        updated = store.update_thread("t1", {"a": 1}, audit=AuditEvent(
            NS, "thread.update", "t1", key_id="k1", role="operator", thread_id="t1"))
        assert updated is not None and updated.metadata == {"a": 1}
        assert store.update_thread("nope", {}, audit=AuditEvent(NS, "thread.update",
                                                                "nope")) is None
        store.delete_thread("t1", audit=AuditEvent(NS, "thread.delete", "t1", thread_id="t1"))
        assert store.get_thread("t1") is None
        events, _ = store.list_audit(NS)
        assert [(e.action, e.target, e.thread_id) for e in events] == [
            ("thread.delete", "t1", "t1"), ("thread.update", "t1", "t1")]
        assert events[1].key_id == "k1" and events[1].role == "operator"

    def test_a_commit_writes_its_audit_event_or_nothing(self, store: RuntimeStore) -> None:
        event = AuditEvent(NS, "state.update", "t1", key_id="k1", role="operator",
                           thread_id="t1")
        store.commit([Commit("t1", expected_head=None, checkpoint=checkpoint("t1", 1),
                             audit=event)])
        with pytest.raises(CheckpointConflictError):  # the head moved: no event either
            store.commit([Commit("t1", expected_head=None, checkpoint=checkpoint("t1", 2),
                                 audit=AuditEvent(NS, "state.update", "lost"))])
        events, _ = store.list_audit(NS)
        assert [(e.action, e.target, e.key_id, e.thread_id) for e in events] == [
            ("state.update", "t1", "k1", "t1")]

    def test_pruning_writes_its_audit_event(self, store: RuntimeStore) -> None:
        for seq in (1, 2, 3):
            store.commit([Commit("t1", checkpoint=checkpoint("t1", seq))])
        pruned = store.prune_checkpoints("t1", 1, audit=AuditEvent(
            NS, "thread.prune", "t1", thread_id="t1"))
        assert pruned == 2
        assert store.prune_checkpoints("t1", 1, audit=AuditEvent(
            NS, "thread.prune", "t1", thread_id="t1")) == 0  # nothing left to go: still logged
        assert [e.action for e in store.list_audit(NS)[0]] == ["thread.prune"] * 2

    def test_create_thread_once_with_its_metadata_and_audit(self, store: RuntimeStore) -> None:
        made = store.create_thread("t1", {"graph_id": "g"}, audit=AuditEvent(
            NS, "thread.create", "t1", key_id="k1", role="operator", thread_id="t1"))
        assert made is not None and made.thread_id == "t1" and made.metadata == {"graph_id": "g"}
        assert store.get_thread("t1") == made
        again = store.create_thread("t1", {"other": 1}, audit=AuditEvent(
            NS, "thread.create", "t1", thread_id="t1"))
        assert again is None  # nothing written: neither the metadata nor the event
        found = store.get_thread("t1")
        assert found is not None and found.metadata == {"graph_id": "g"}
        assert [e.action for e in store.list_audit(NS)[0]] == ["thread.create"]
        elsewhere = store.create_thread("t1", {}, namespace="other")
        assert elsewhere is not None and elsewhere.namespace == "other"
        store.commit([Commit("t1", lease_token=None)])  # a commit on it works as on any
        with pytest.raises(StoreError):
            store.create_thread("t2", {"x": object()})
        assert store.get_thread("t2") is None

    def test_concurrent_creations_of_one_thread_let_one_win(self, store: RuntimeStore) -> None:
        barrier = threading.Barrier(6)
        won: list[bool] = []

        def create(i: int) -> None:
            barrier.wait()
            won.append(store.create_thread("t1", {"by": i}) is not None)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(won) == [False] * 5 + [True]

    def test_audit_log_pages_and_namespaces(self, store: RuntimeStore) -> None:
        written = [store.append_audit(AuditEvent("tenant-a", "thread.create", f"t{i}"))
                   for i in range(5)]
        store.append_audit(AuditEvent("tenant-b", "thread.create", "tb"))
        seen: list[str] = []
        cursor = None
        for _ in range(3):
            page, cursor = store.list_audit("tenant-a", limit=2, cursor=cursor)
            seen += [e.target for e in page]
            if cursor is None:
                break
        assert seen == [e.target for e in reversed(written)] and cursor is None
        [only] = store.list_audit("tenant-b")[0]
        assert only.target == "tb" and only.namespace == "tenant-b"
        assert store.list_audit("tenant-c") == ([], None)
        for bad in ("x", "a" + "g" * 24, "../", "a" + "0" * 23 + "'", "a" + "0" * 25):
            with pytest.raises(ValueError):
                store.list_audit("tenant-a", cursor=bad)

    # -- namespaces -----------------------------------------------------------------------
