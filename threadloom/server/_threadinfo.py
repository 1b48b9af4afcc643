"""What the threads routes know about one thread: its record in the caller's namespace, the
graph it belongs to, its status, and the thread object LangGraph's server shows.

A thread belongs to the graph of its latest run; a thread without runs to the graph its
metadata names (``graph_id``, or an ``assistant_id``), as in LangGraph's server. Its status
follows the table of ``runtime.md``: ``busy`` while a run is pending or running, then the
latest run's outcome (``interrupted``, ``error``, else ``idle``). When the thread's latest
checkpoint was written by ``update_state`` after its runs (or it has no runs), the status is
``interrupted`` if nodes are due and ``idle`` otherwise, as LangGraph's server computes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from threadloom._json import to_jsonable
from threadloom.checkpoint.base import RunRecord, ThreadRecord
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.graph.compiled import CompiledGraph
from threadloom.server._shapes import iso, task_interrupts
from threadloom.server.deps import assistant_id_for
from threadloom.server.errors import InvalidRequestError, NotFoundError
from threadloom.types import RunnableConfig, StateSnapshot

__all__ = [
    "ACTIVE",
    "ThreadInfo",
    "ThreadStatus",
    "check_thread_id",
    "find_graph",
    "find_thread",
    "thread_config",
]

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
ACTIVE = ("pending", "running")
_BY_RUN: dict[str, ThreadStatus] = {
    "pending": "busy",
    "running": "busy",
    "interrupted": "interrupted",
    "succeeded": "idle",
    "failed": "error",
    "cancelled": "idle",
}


def check_thread_id(thread_id: str) -> str:
    """``thread_id`` if the API can take it: 1 to 255 printable characters (the engine's
    rule), without ``/`` (a path segment could not name it).

    Raises:
        InvalidRequestError: it is not.
    """
    if not 1 <= len(thread_id) <= 255 or not thread_id.isprintable() or "/" in thread_id:
        raise InvalidRequestError(
            "a thread id is 1 to 255 printable characters other than '/'; got "
            f"{len(thread_id)} characters"
            f"{'' if thread_id.isprintable() else ', not all printable'}"
            f"{', with a /' if '/' in thread_id else ''}"
        )
    return thread_id


def find_thread(store: RuntimeStore, thread_id: str, namespace: str) -> ThreadRecord:
    """The thread ``thread_id`` of ``namespace``.

    Raises:
        InvalidRequestError: not a valid thread id.
        NotFoundError: no such thread in the namespace.
    """
    record = store.get_thread(check_thread_id(thread_id), namespace=namespace)
    if record is None or record.namespace != namespace:
        raise NotFoundError(f"no thread {thread_id!r}")
    return record


def find_graph(graphs: Mapping[str, CompiledGraph],
               name: str) -> tuple[str, CompiledGraph] | None:
    """The registered graph ``name`` names: a registered name, an assistant id, or the name a
    graph records on its runs (when only one registered graph has it)."""
    graph = graphs.get(name)
    if graph is not None:
        return name, graph
    for registered, graph in graphs.items():
        if assistant_id_for(registered) == name:
            return registered, graph
    named = [(registered, g) for registered, g in graphs.items() if g.name == name]
    return named[0] if len(named) == 1 else None


def thread_config(thread_id: str, namespace: str,
                  checkpoint_id: str | None = None) -> RunnableConfig:
    """The engine config addressing the thread (at ``checkpoint_id`` if given)."""
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    config: dict[str, Any] = {"configurable": configurable, "namespace": namespace}
    return config  # type: ignore[return-value]


@dataclass(slots=True)
class ThreadInfo:
    """One thread of a namespace, with its latest run and its graph (if registered)."""

    record: ThreadRecord
    latest_run: RunRecord | None
    active: bool
    graph_name: str | None
    graph: CompiledGraph | None

    @classmethod
    def load(cls, store: RuntimeStore, graphs: Mapping[str, CompiledGraph],
             record: ThreadRecord) -> ThreadInfo:
        """Read the thread's latest run and whether any run of it is active."""
        ns = record.namespace
        runs = store.list_runs(thread_id=record.thread_id, namespace=ns, limit=1)
        latest = runs[0] if runs else None
        active = latest is not None and latest.status in ACTIVE
        if latest is not None and not active:
            # a retried run is queued again under its old creation time
            active = any(store.list_runs(thread_id=record.thread_id, namespace=ns, status=s,
                                         limit=1) for s in ACTIVE)
        names: list[str] = [latest.graph] if latest is not None else []
        names += [v for k in ("graph_id", "assistant_id")
                  if isinstance(v := record.metadata.get(k), str)]
        for name in names:
            found = find_graph(graphs, name)
            if found is not None:
                return cls(record, latest, active, found[0], found[1])
        return cls(record, latest, active, names[0] if names else None, None)

    @property
    def thread_id(self) -> str:
        """The thread's id."""
        return self.record.thread_id

    @property
    def namespace(self) -> str:
        """The thread's namespace."""
        return self.record.namespace

    def config(self, checkpoint_id: str | None = None) -> RunnableConfig:
        """The engine config addressing this thread."""
        return thread_config(self.thread_id, self.namespace, checkpoint_id)

    def snapshot(self) -> StateSnapshot | None:
        """The thread's latest state, or ``None`` when its graph is not registered here."""
        if self.graph is None:
            return None
        return self.graph.get_state(self.config())

    def status(self, snapshot: StateSnapshot | None) -> ThreadStatus:
        """The thread's status (see the module docstring)."""
        if self.active:
            return "busy"
        updated = snapshot is not None and (snapshot.metadata or {}).get("source") == "update"
        if self.latest_run is None or updated:
            return "interrupted" if snapshot is not None and snapshot.next else "idle"
        return _BY_RUN.get(self.latest_run.status, "idle")

    def as_json(self, snapshot: StateSnapshot | None = None, *,
                load: bool = True) -> dict[str, Any]:
        """The thread as LangGraph's server shows it (reads its state unless ``snapshot`` is
        given or ``load`` is false)."""
        if snapshot is None and load:
            snapshot = self.snapshot()
        has_state = snapshot is not None and snapshot.created_at is not None
        record = self.record
        return {
            "thread_id": record.thread_id,
            "created_at": iso(record.created_at),
            "updated_at": iso(record.updated_at),
            "state_updated_at": iso(record.updated_at),
            "metadata": to_jsonable(record.metadata),
            "status": self.status(snapshot),
            "config": {},
            "values": to_jsonable(snapshot.values) if has_state and snapshot else None,
            "interrupts": task_interrupts(snapshot) if has_state and snapshot else {},
        }
