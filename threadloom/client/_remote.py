"""``RemoteGraph``: a graph served by a threadloom server, with a compiled graph's methods.

``graph.invoke(input, {"configurable": {"thread_id": "t-1"}})`` runs the served graph on
thread ``t-1`` (created when missing) and returns what :meth:`CompiledGraph.invoke
<threadloom.graph.compiled.CompiledGraph.invoke>` returns; ``stream`` yields the chunks it
yields, ``get_state`` returns a :class:`~threadloom.types.StateSnapshot`, pending interrupts
are :class:`~threadloom.types.Interrupt` objects, and a run that failed raises
:class:`~threadloom.client.RemoteRunError`. So code moves from a local graph to a served one
by changing the line that makes the graph.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from threadloom.client._client import AsyncClient, Client
from threadloom.client._errors import BadRequestError, NotFoundError, RemoteRunError
from threadloom.client._runs import RunOptions
from threadloom.client._sse import StreamPart
from threadloom.client._transport import RetryPolicy
from threadloom.client._types import (
    Checkpoint,
    InterruptItem,
    NamespaceRunsPage,
    ThreadState,
    UpdateStateResult,
)
from threadloom.config import resolve_identity
from threadloom.errors import InvalidConfigError
from threadloom.types import Command, Interrupt, RunnableConfig, StateSnapshot, StateTask

__all__ = ["RemoteGraph"]

_MODES = ("values", "updates", "custom", "debug")
_RUN_OPTIONS = ("durability", "interrupt_before", "interrupt_after", "timeout", "context")
_OWN_KEYS = ("thread_id", "run_id", "namespace", "checkpoint_id", "checkpoint_ns")
_SKIP = object()


@dataclass(frozen=True, slots=True)
class _Target:
    """What a config addresses: the thread (``None``: a stateless run), the run id (chosen
    here when the config gives none), a checkpoint, and the rest of the config."""

    thread_id: str | None
    run_id: str
    checkpoint_id: str | None
    namespace: str | None
    rest: dict[str, Any]

    def thread(self) -> str:
        if self.thread_id is None:
            raise InvalidConfigError(
                "this call needs a thread_id in the config, e.g. "
                "{'configurable': {'thread_id': 'user-1'}}")
        return self.thread_id

    def config(self, checkpoint: Checkpoint | None = None) -> RunnableConfig:
        """The config a local graph would return for ``checkpoint`` (or for the thread)."""
        configurable: dict[str, Any] = dict(checkpoint) if checkpoint else {
            "thread_id": self.thread()}
        config: dict[str, Any] = {"configurable": configurable}
        if self.namespace not in (None, "default"):
            config["namespace"] = self.namespace
        return config  # type: ignore[return-value]


class RemoteGraph:
    """A graph registered on a threadloom server, used like a compiled graph.

    Args:
        graph: the graph's registered name (or its assistant id).
        url, api_key, namespace, headers, timeout, retry: as for
            :class:`~threadloom.client.Client` (``$THREADLOOM_URL`` and
            ``$THREADLOOM_API_KEY`` by default).
        client, async_client: clients to use instead (e.g. shared by several graphs); the
            graph does not close them.

    The config's ``thread_id`` names the thread (created on the server when missing; without
    one, a run is stateless), ``run_id`` the run, ``checkpoint_id`` a checkpoint to run or
    read from; its other keys go to the run as its config.

    Example:
        >>> graph = RemoteGraph("seed_loop", url="http://127.0.0.1:8000", api_key="tl_...")
        >>> graph.invoke({"step": 0}, {"configurable": {"thread_id": "t-1"}})
        {'step': 3, 'done': True}
    """

    def __init__(self, graph: str, *, url: str | None = None, api_key: str | None = None,
                 namespace: str | None = None, headers: Mapping[str, str] | None = None,
                 timeout: float | httpx.Timeout | None = None, retry: RetryPolicy | None = None,
                 client: Client | None = None, async_client: AsyncClient | None = None) -> None:
        self.graph = graph
        self.name = graph
        self.namespace = namespace
        self._settings: dict[str, Any] = {"url": url, "api_key": api_key,
                                          "namespace": namespace, "headers": headers,
                                          "timeout": timeout, "retry": retry}
        self._client, self._owns_client = client, client is None
        self._async_client, self._owns_async = async_client, async_client is None
        self._threads: dict[str, str] = {}  # run id -> thread id, of the runs started here

    def __repr__(self) -> str:
        return f"RemoteGraph({self.graph!r})"

    @property
    def client(self) -> Client:
        """The sync client (made at first use)."""
        if self._client is None:
            self._client = Client(**self._settings)
        return self._client

    @property
    def async_client(self) -> AsyncClient:
        """The async client (made at first use)."""
        if self._async_client is None:
            self._async_client = AsyncClient(**self._settings)
        return self._async_client

    def close(self) -> None:
        """Close the sync client, if this graph made it."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close both clients, if this graph made them."""
        self.close()
        if self._owns_async and self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    def __enter__(self) -> RemoteGraph:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> RemoteGraph:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # -- running ------------------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, *,
               stream_mode: str = "values", **kwargs: Any) -> Any:
        """Run the graph on the server to the end and return its output (the values, with
        ``__interrupt__`` when it paused); as :meth:`CompiledGraph.invoke`.

        Raises:
            RemoteRunError: the run failed (a node raised, a timeout...).
        """
        if stream_mode != "values":
            return list(self.stream(input, config, stream_mode=stream_mode, **kwargs))
        target, options = self._run(input, config, kwargs)
        result = self.client.runs.wait(target.thread_id, self.graph, **options)
        return _output(result, target.run_id)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, *,
                      stream_mode: str = "values", **kwargs: Any) -> Any:
        """Async :meth:`invoke`."""
        if stream_mode != "values":
            return [c async for c in self.astream(input, config, stream_mode=stream_mode,
                                                  **kwargs)]
        target, options = self._run(input, config, kwargs)
        result = await self.async_client.runs.wait(target.thread_id, self.graph, **options)
        return _output(result, target.run_id)

    def stream(self, input: Any, config: RunnableConfig | None = None, *,
               stream_mode: str | Sequence[str] = "updates", **kwargs: Any) -> Iterator[Any]:
        """Run the graph on the server and yield its chunks as they come: one mode's chunks
        as they are, several modes' as ``(mode, chunk)``; as :meth:`CompiledGraph.stream`.
        A dropped connection is joined again where it broke.

        Raises:
            RemoteRunError: the run failed.
        """
        modes, single = _modes(stream_mode)
        target, options = self._run(input, config, kwargs, modes)
        for part in self.client.runs.stream(target.thread_id, self.graph, **options):
            chunk = _chunk(part, single, target.run_id)
            if chunk is not _SKIP:
                yield chunk

    async def astream(self, input: Any, config: RunnableConfig | None = None, *,
                      stream_mode: str | Sequence[str] = "updates",
                      **kwargs: Any) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        modes, single = _modes(stream_mode)
        target, options = self._run(input, config, kwargs, modes)
        async for part in self.async_client.runs.stream(target.thread_id, self.graph,
                                                        **options):
            chunk = _chunk(part, single, target.run_id)
            if chunk is not _SKIP:
                yield chunk

    def resume(self, run_id: str, value: Any = None, *,
               config: RunnableConfig | None = None) -> Any:
        """Continue run ``run_id`` (``value`` answers its pending ``interrupt()``) and
        return its output; a run that finished answers its result, one still going is
        waited for. Its thread is the config's ``thread_id``, or the one this graph started
        the run on. On the server this is a new run on the thread, continuing from its
        latest checkpoint.

        Raises:
            NotFoundError: no such run (on the thread, or in the key's namespace).
            RemoteRunError: the continued run failed.
        """
        thread_id = self._thread_of(run_id, config)
        runs = self.client.runs
        run = runs.get(thread_id, run_id)
        if run["status"] in ("pending", "running", "success"):
            return _output(runs.join(thread_id, run_id), run_id)
        new_id = str(uuid.uuid4())
        result = runs.wait(thread_id, self.graph, **_continue(value, new_id))
        return _output(result, new_id)

    async def aresume(self, run_id: str, value: Any = None, *,
                      config: RunnableConfig | None = None) -> Any:
        """Async :meth:`resume`."""
        thread_id = await self._athread_of(run_id, config)
        runs = self.async_client.runs
        run = await runs.get(thread_id, run_id)
        if run["status"] in ("pending", "running", "success"):
            return _output(await runs.join(thread_id, run_id), run_id)
        new_id = str(uuid.uuid4())
        result = await runs.wait(thread_id, self.graph, **_continue(value, new_id))
        return _output(result, new_id)

    # -- state --------------------------------------------------------------------------------

    def get_state(self, config: RunnableConfig, *, subgraphs: bool = False) -> StateSnapshot:
        """The thread's state at its latest checkpoint (or the config's ``checkpoint_id``);
        an unknown thread has an empty one, as locally."""
        target = self._target(config)
        try:
            state = self.client.threads.get_state(target.thread(), target.checkpoint_id,
                                                  subgraphs=subgraphs)
        except NotFoundError as exc:
            return _missing(target, exc)
        return _snapshot(state, target)

    async def aget_state(self, config: RunnableConfig, *,
                         subgraphs: bool = False) -> StateSnapshot:
        """Async :meth:`get_state`."""
        target = self._target(config)
        try:
            state = await self.async_client.threads.get_state(
                target.thread(), target.checkpoint_id, subgraphs=subgraphs)
        except NotFoundError as exc:
            return _missing(target, exc)
        return _snapshot(state, target)

    def get_state_history(self, config: RunnableConfig, *,
                          filter: dict[str, Any] | None = None,
                          before: RunnableConfig | None = None,
                          limit: int | None = None) -> Iterator[StateSnapshot]:
        """The thread's checkpoints as snapshots, newest first (see
        :meth:`CompiledGraph.get_state_history`)."""
        target = self._target(config)
        before_id = self._target(before).checkpoint_id if before is not None else None
        try:
            states = self.client.threads.get_history(target.thread(), limit=limit or 1000,
                                                     before=before_id, metadata=filter)
        except NotFoundError as exc:
            _missing(target, exc)
            states = []
        for state in states:
            yield _snapshot(state, target)

    def update_state(self, config: RunnableConfig, values: Any,
                     as_node: str | None = None) -> RunnableConfig:
        """Apply ``values`` as if node ``as_node`` had returned them: a new checkpoint,
        whose config is returned (the thread is created when missing)."""
        target = self._target(config)
        thread_id = target.thread()
        threads = self.client.threads
        for _ in range(2):
            try:
                written = threads.update_state(thread_id, values, as_node=as_node,
                                               checkpoint_id=target.checkpoint_id)
                return _written(written, target)
            except NotFoundError as exc:
                _missing(target, exc)
                threads.create(thread_id=thread_id, graph_id=self.graph, if_exists="do_nothing")
            except BadRequestError as exc:
                _graphless(exc)
                threads.update(thread_id, metadata={"graph_id": self.graph})
        raise InvalidConfigError(f"thread {thread_id!r} could not be given graph {self.graph!r}")

    async def aupdate_state(self, config: RunnableConfig, values: Any,
                            as_node: str | None = None) -> RunnableConfig:
        """Async :meth:`update_state`."""
        target = self._target(config)
        thread_id = target.thread()
        threads = self.async_client.threads
        for _ in range(2):
            try:
                written = await threads.update_state(thread_id, values, as_node=as_node,
                                                     checkpoint_id=target.checkpoint_id)
                return _written(written, target)
            except NotFoundError as exc:
                _missing(target, exc)
                await threads.create(thread_id=thread_id, graph_id=self.graph,
                                     if_exists="do_nothing")
            except BadRequestError as exc:
                _graphless(exc)
                await threads.update(thread_id, metadata={"graph_id": self.graph})
        raise InvalidConfigError(f"thread {thread_id!r} could not be given graph {self.graph!r}")

    # -- helpers ------------------------------------------------------------------------------

    def _target(self, config: RunnableConfig | Mapping[str, Any] | None) -> _Target:
        config = dict(config or {})
        identity = resolve_identity(config)
        given = config.get("namespace") or (config.get("configurable") or {}).get("namespace")
        if given is not None and given != (self.namespace or "default"):
            raise InvalidConfigError(
                f"the config names namespace {given!r}, this RemoteGraph acts in "
                f"{self.namespace or 'its key'!r}: pass namespace= to RemoteGraph")
        configurable = dict(config.pop("configurable", None) or {})
        checkpoint_id = configurable.pop("checkpoint_id", None)
        for key in _OWN_KEYS:
            config.pop(key, None)
            configurable.pop(key, None)
        rest = {**config, "configurable": configurable} if configurable else config
        return _Target(identity.thread_id, identity.run_id, checkpoint_id, self.namespace,
                       rest)

    def _run(self, input: Any, config: RunnableConfig | None, kwargs: dict[str, Any],
             modes: list[str] | None = None) -> tuple[_Target, RunOptions]:
        unknown = set(kwargs) - set(_RUN_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        target = self._target(config)
        options: dict[str, Any] = {k: v for k, v in kwargs.items() if v is not None}
        if isinstance(options.get("interrupt_before"), tuple | set | frozenset):
            options["interrupt_before"] = list(options["interrupt_before"])
        if isinstance(options.get("interrupt_after"), tuple | set | frozenset):
            options["interrupt_after"] = list(options["interrupt_after"])
        if isinstance(input, Command):
            options["command"] = _command(input)
        else:
            options["input"] = input
        options["run_id"] = target.run_id
        if target.rest:
            options["config"] = target.rest
        if target.checkpoint_id is not None:
            options["checkpoint_id"] = target.checkpoint_id
        if modes is not None:
            options["stream_mode"] = modes
        if target.thread_id is not None:
            options["if_not_exists"] = "create"
            self._threads[target.run_id] = target.thread_id
        return target, options  # type: ignore[return-value]

    def _thread_of(self, run_id: str, config: RunnableConfig | None) -> str:
        """The run's thread: the config's, the one this graph started it on, or the
        server's record of the run (found in the namespace the key acts in)."""
        thread_id = self._known_thread(run_id, config)
        if thread_id is not None:
            return thread_id
        namespace = self.client.me()["namespace"]
        cursor: str | None = None
        while True:
            page = self.client.states.runs(namespace=namespace, run_id_prefix=run_id,
                                           limit=1000, cursor=cursor)
            found = _thread_in(page, run_id)
            if found is not None or page["next_cursor"] is None:
                return self._found(run_id, found)
            cursor = page["next_cursor"]

    async def _athread_of(self, run_id: str, config: RunnableConfig | None) -> str:
        """Async :meth:`_thread_of`."""
        thread_id = self._known_thread(run_id, config)
        if thread_id is not None:
            return thread_id
        namespace = (await self.async_client.me())["namespace"]
        cursor: str | None = None
        while True:
            page = await self.async_client.states.runs(namespace=namespace,
                                                       run_id_prefix=run_id, limit=1000,
                                                       cursor=cursor)
            found = _thread_in(page, run_id)
            if found is not None or page["next_cursor"] is None:
                return self._found(run_id, found)
            cursor = page["next_cursor"]

    def _known_thread(self, run_id: str, config: RunnableConfig | None) -> str | None:
        thread_id = self._target(config).thread_id if config else None
        return thread_id or self._threads.get(run_id)

    def _found(self, run_id: str, thread_id: str | None) -> str:
        if thread_id is None:
            raise NotFoundError(404, "not_found", f"no run {run_id!r} in the key's namespace")
        self._threads[run_id] = thread_id
        return thread_id


# -- conversions (pure) ----------------------------------------------------------------------


def _thread_in(page: NamespaceRunsPage, run_id: str) -> str | None:
    """The thread of run ``run_id`` if the page lists it (a prefix search lists others)."""
    return next((r["thread_id"] for r in page["runs"] if r["run_id"] == run_id), None)


def _modes(stream_mode: str | Sequence[str]) -> tuple[list[str], bool]:
    single = isinstance(stream_mode, str)
    modes = [stream_mode] if isinstance(stream_mode, str) else list(stream_mode)
    for mode in modes:
        if mode not in _MODES:
            raise ValueError(f"unknown stream mode {mode!r}; use one of {_MODES}")
    return modes, single


def _command(command: Command[Any]) -> dict[str, Any]:
    if command.graph is not None:
        raise InvalidConfigError("a Command for a parent graph cannot start a run")
    body: dict[str, Any] = {}
    if command.resume is not None:
        body["resume"] = command.resume
    if command.update is not None:
        body["update"] = command.update
    targets = command.goto_targets()
    if targets:
        if not all(isinstance(t, str) for t in targets):
            raise InvalidConfigError("a Command sent to a server can goto node names only")
        body["goto"] = list(targets)
    return body


def _continue(value: Any, run_id: str) -> RunOptions:
    if value is None:
        return {"input": None, "run_id": run_id}
    return {"command": {"resume": value}, "run_id": run_id}


def _interrupts(items: Sequence[InterruptItem]) -> list[Interrupt]:
    return [Interrupt(item.get("value"), item.get("id", "")) for item in items]


def _output(result: dict[str, Any], run_id: str) -> Any:
    if not isinstance(result, dict):
        return result
    error = result.get("__error__")
    if isinstance(error, dict):
        raise RemoteRunError(str(error.get("error", "Error")), str(error.get("message", "")),
                             run_id)
    if "__interrupt__" in result:
        return {**result, "__interrupt__": _interrupts(result["__interrupt__"])}
    return result


def _chunk(part: StreamPart, single: bool, run_id: str) -> Any:
    if part.event == "error":
        data = part.data if isinstance(part.data, dict) else {}
        raise RemoteRunError(str(data.get("error", "Error")), str(data.get("message", "")),
                             run_id)
    if part.event not in _MODES:
        return _SKIP  # metadata
    data = part.data
    if isinstance(data, dict) and "__interrupt__" in data:
        if part.event == "values":
            return _SKIP  # LangGraph's server repeats the interrupt as values; a graph does not
        data = {**data, "__interrupt__": tuple(_interrupts(data["__interrupt__"]))}
    return data if single else (part.event, data)


def _task(task: Mapping[str, Any], target: _Target) -> StateTask:
    state = task.get("state")
    return StateTask(
        id=task["id"], name=task["name"], path=tuple(task.get("path") or ()),
        error=task.get("error"), interrupts=tuple(_interrupts(task.get("interrupts") or [])),
        result=task.get("result"),
        state=_snapshot(state, target) if isinstance(state, dict) else None,
    )


def _snapshot(state: ThreadState | Mapping[str, Any], target: _Target) -> StateSnapshot:
    checkpoint = state.get("checkpoint")
    parent = state.get("parent_checkpoint")
    return StateSnapshot(
        values=state.get("values") or {},
        next=tuple(state.get("next") or ()),
        config=target.config(checkpoint),
        metadata=state.get("metadata"),
        created_at=state.get("created_at"),
        parent_config=target.config(parent) if parent else None,
        tasks=tuple(_task(t, target) for t in state.get("tasks") or ()),
        interrupts=tuple(_interrupts(state.get("interrupts") or [])),
    )


def _missing(target: _Target, exc: NotFoundError) -> StateSnapshot:
    """A thread the server does not have: the empty state a local graph shows (another
    404, e.g. of the checkpoint, is raised)."""
    if exc.server_code != "not_found" or target.checkpoint_id is not None:
        raise exc
    return StateSnapshot({}, (), target.config(), None, None, None)


def _graphless(exc: BadRequestError) -> None:
    if exc.server_code != "thread_has_no_graph":
        raise exc


def _written(result: UpdateStateResult, target: _Target) -> RunnableConfig:
    return target.config(result["checkpoint"])
