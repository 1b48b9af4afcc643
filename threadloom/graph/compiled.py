"""``CompiledGraph``: an immutable, runnable graph."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from threadloom.checkpoint.base import Store
from threadloom.checkpoint.crypto import serializer_from_env
from threadloom.checkpoint.serde import Serializer
from threadloom.config import (
    DEFAULT_NAMESPACE,
    check_config,
    resolve_durability,
    resolve_identity,
    resolve_recursion_limit,
)
from threadloom.engine._durable import DurableRun
from threadloom.engine._durable_context import DurableContext
from threadloom.engine._loop import Run, RunContext, Sink, run_async, run_sync
from threadloom.engine._nested import (
    NestedContext,
    NestedRun,
    nested_interrupt,
    subgraph_namespace,
)
from threadloom.engine._persist import Codec, Writer
from threadloom.engine._recording import Persistence
from threadloom.errors import GraphValidationError, InvalidConfigError
from threadloom.graph._build import build_spec
from threadloom.graph._threads import ThreadsMixin, config_checkpoint
from threadloom.types import Durability, RunnableConfig, StreamMode

if TYPE_CHECKING:
    from threadloom._context import TaskScope
    from threadloom.graph._draw import DrawableGraph
    from threadloom.graph.state import StateGraph

__all__ = ["CompiledGraph"]

_VALID_MODES = ("values", "updates", "custom", "debug")
_DONE = object()
_FAILED = object()


_NAMESPACES_KEPT = 64
"""How many namespaces' persistence bundles (codecs) a compiled graph keeps at once."""


def _normalize_modes(stream_mode: StreamMode | Sequence[StreamMode]) -> tuple[list[str], bool]:
    single = isinstance(stream_mode, str)
    modes: list[str] = [stream_mode] if isinstance(stream_mode, str) else list(stream_mode)
    for mode in modes:
        if mode not in _VALID_MODES:
            raise ValueError(f"unknown stream mode {mode!r}; use one of {_VALID_MODES}")
    return modes, single


class CompiledGraph(ThreadsMixin):
    """A validated graph, ready to run. Immutable: build a new graph to change it.

    Run it with :meth:`invoke` / :meth:`ainvoke`, or watch it run with :meth:`stream` /
    :meth:`astream`. The config may carry ``run_id`` (default: a new UUID4), ``thread_id``
    and ``namespace`` (top level or under ``configurable``; the namespace, default
    ``"default"``, is the tenant of the store the thread and run belong to: run and thread
    ids are unique within one), ``recursion_limit`` (default 10,000 supersteps) and
    ``timeout`` (seconds for the whole run).
    """

    __slots__ = (
        "builder",
        "spec",
        "checkpointer",
        "cache",
        "interrupt_before",
        "interrupt_after",
        "durability",
        "debug",
        "name",
        "config",
        "has_async_nodes",
        "serde",
        "lease_ttl",
        "_persistence",
        "_writer",
        "_pool",
        "_task_pool",
        "_pool_lock",
        "_frozen",
    )

    def __init__(
        self,
        builder: StateGraph,
        *,
        checkpointer: Any = None,
        cache: Any = None,
        interrupt_before: tuple[str, ...] = (),
        interrupt_after: tuple[str, ...] = (),
        durability: Durability | None = None,
        debug: bool = False,
        name: str = "graph",
        config: RunnableConfig | None = None,
        serde: Serializer | None = None,
        lease_ttl: float = 30.0,
    ) -> None:
        self.builder = builder
        self.spec = build_spec(builder, name)
        self.checkpointer = checkpointer
        self.cache = cache
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.durability: Durability = durability or "async"
        self.debug = debug
        self.name = name
        self.config: RunnableConfig = config or {}
        self.has_async_nodes = any(
            n.is_async or any(b.is_async for b in n.branches) for n in self.spec.nodes.values()
        ) or any(b.is_async for b in self.spec.start_branches)
        self.serde: Serializer = serde or serializer_from_env()
        self.lease_ttl = lease_ttl
        self._persistence: dict[str, Persistence] = {}  # by namespace
        self._writer: Writer | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._task_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._frozen = True

    def __setattr__(self, key: str, value: Any) -> None:
        if getattr(self, "_frozen", False) and key not in ("_pool", "_task_pool", "_persistence",
                                                          "_writer"):
            raise AttributeError(f"CompiledGraph is immutable (cannot set {key!r})")
        object.__setattr__(self, key, value)

    def __repr__(self) -> str:
        return f"<CompiledGraph {self.name!r} nodes={list(self.spec.nodes)}>"

    # -- plumbing -------------------------------------------------------------------------

    def _get_pool(self) -> concurrent.futures.Executor:
        """Threads for sync nodes that run in parallel (created on first use)."""
        return self._pool or self._lazy_pool("_pool", "node")

    def _get_task_pool(self) -> concurrent.futures.Executor:
        """Threads for ``@task`` calls, apart from the nodes that wait on them."""
        return self._task_pool or self._lazy_pool("_task_pool", "task")

    def _lazy_pool(self, attr: str, kind: str) -> concurrent.futures.Executor:
        with self._pool_lock:
            pool = getattr(self, attr)
            if pool is None:
                pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=min(32, (os.cpu_count() or 1) + 8),
                    thread_name_prefix=f"threadloom-{self.name}-{kind}",
                )
                setattr(self, attr, pool)
        return pool  # type: ignore[no-any-return]

    def with_config(self, config: RunnableConfig | None = None, **kwargs: Any) -> CompiledGraph:
        """A copy of this graph whose runs start from ``config`` merged into their own."""
        merged: dict[str, Any] = {**self.config, **(config or {}), **kwargs}
        return CompiledGraph(
            self.builder,
            checkpointer=self.checkpointer,
            cache=self.cache,
            interrupt_before=self.interrupt_before,
            interrupt_after=self.interrupt_after,
            durability=self.durability,
            debug=self.debug,
            name=self.name,
            config=merged,  # type: ignore[arg-type]
            serde=self.serde,
            lease_ttl=self.lease_ttl,
        )

    def _merge_config(self, config: RunnableConfig | None) -> dict[str, Any]:
        config = cast("RunnableConfig", check_config(config))
        if not self.config:
            return dict(config)
        merged: dict[str, Any] = {**self.config, **(config or {})}
        configurable = {
            **(self.config.get("configurable") or {}),
            **((config or {}).get("configurable") or {}),
        }
        if configurable:
            merged["configurable"] = configurable
        return merged

    def _store(self) -> Store | None:
        cp = self.checkpointer
        return cp if cp is not None and not isinstance(cp, bool) else None

    def _persist(self, namespace: str = DEFAULT_NAMESPACE) -> Persistence:
        """The graph's persistence in ``namespace`` (store set up once; a codec that binds
        values to the namespace; the writer and heartbeat shared by every namespace)."""
        p = self._persistence.get(namespace)
        if p is None:
            with self._pool_lock:
                p = self._persistence.get(namespace)
                if p is None:
                    store = self._store()
                    if store is None:
                        raise InvalidConfigError(
                            f"graph {self.name!r} has no checkpointer: compile it with "
                            "checkpointer=... to keep threads, runs and history"
                        )
                    first = next(iter(self._persistence.values()), None)
                    if first is None:
                        store.setup()
                    elif len(self._persistence) >= _NAMESPACES_KEPT:
                        # a small cache: drop the oldest namespace's bundle but the first
                        del self._persistence[list(self._persistence)[1]]
                    p = Persistence(store, Codec(self.spec, self.serde, namespace),
                                    self._get_writer, self.name, self.lease_ttl,
                                    heartbeat=first.heartbeat if first is not None else None)
                    self._persistence[namespace] = p
        return p

    def _get_writer(self) -> Writer:
        writer = self._writer
        if writer is None:
            with self._pool_lock:
                writer = self._writer
                if writer is None:
                    store = self._store()
                    assert store is not None
                    writer = self._writer = Writer(store)
        return writer

    def _durable(self, namespace: str = DEFAULT_NAMESPACE) -> tuple[Store, Codec]:
        p = self._persist(namespace)
        return p.store, p.codec

    def _prepare(self, config: RunnableConfig | None, sink: Sink | None,
                 options: dict[str, Any] | None = None) -> Run:
        cfg = self._merge_config(config)
        if options:
            cfg.update({k: v for k, v in options.items() if v is not None})
        identity = resolve_identity(cfg)
        limit = resolve_recursion_limit(cfg)
        store = self._store()
        thread_id = identity.thread_id
        namespace = identity.namespace
        if store is not None and thread_id is None:
            recorded = self._persist(namespace).store.get_run(
                identity.run_id, namespace=namespace) if identity.run_id_given else None
            thread_id = recorded.thread_id if recorded is not None else identity.run_id
        configurable = dict(cfg.get("configurable") or {})
        configurable["run_id"] = identity.run_id
        if thread_id is not None:
            configurable["thread_id"] = thread_id
            cfg["thread_id"] = thread_id
        if namespace != DEFAULT_NAMESPACE:
            configurable["namespace"] = namespace
            cfg["namespace"] = namespace
        cfg["configurable"] = configurable
        cfg["run_id"] = identity.run_id
        cfg["recursion_limit"] = limit
        timeout = cfg.get("timeout")
        before = frozenset(self._interrupt_names(cfg, "interrupt_before"))
        after = frozenset(self._interrupt_names(cfg, "interrupt_after"))
        if store is None:
            ctx = RunContext(
                self.spec, identity.run_id, thread_id, cfg, sink, self._get_pool,
                timeout=float(timeout) if timeout is not None else None,
                task_pool=self._get_task_pool, cache=self.cache,
            )
            return Run(ctx, limit, before, after)
        durability = resolve_durability(cfg.get("durability"), self.durability)
        fork = config_checkpoint(cfg)
        dctx = DurableContext(
            self.spec, identity.run_id, thread_id, cfg, sink, self._get_pool,
            timeout=float(timeout) if timeout is not None else None,
            task_pool=self._get_task_pool, cache=self.cache,
        )
        return DurableRun(dctx, limit, self._persist(namespace), durability, before, after, fork,
                          identity.run_id_given, cfg.get("wait") or False)

    def _interrupt_names(self, cfg: dict[str, Any], key: str) -> tuple[str, ...]:
        """The breakpoints of a run: the per-invoke ones (checked as ``compile`` checks
        them), else the compiled ones."""
        value = cfg.get(key)
        if value is None:
            return cast("tuple[str, ...]", getattr(self, key))
        names = (value,) if isinstance(value, str) else tuple(value)
        for name in names:
            if name != "*" and name not in self.spec.nodes:
                raise GraphValidationError(
                    f"{key} names unknown node {name!r}; the graph's nodes are "
                    f"{sorted(self.spec.nodes)}"
                )
        return names

    def _run_durable(self, input: Any, config: RunnableConfig | None) -> Any:
        if self.has_async_nodes:
            return _run_coroutine_sync(run_async(self._prepare(config, None), input))
        return run_sync(self._prepare(config, None), input)

    def _run_nested(self, input: Any, config: RunnableConfig, scope: TaskScope) -> Any:
        """Run as the node ``scope`` of a parent graph: with checkpoints in the parent's
        thread when the parent is durable (:mod:`threadloom.engine._nested`). An interrupt
        inside pauses the parent."""
        run = self._prepare_nested(config, scope)
        out = run_sync(run, input, nested=True)
        if run.interrupts:
            raise nested_interrupt(run.interrupts, scope.task_id, len(scope.resume))
        return out

    async def _arun_nested(self, input: Any, config: RunnableConfig, scope: TaskScope) -> Any:
        run = self._prepare_nested(config, scope)
        out = await run_async(run, input, nested=True)
        if run.interrupts:
            raise nested_interrupt(run.interrupts, scope.task_id, len(scope.resume))
        return out

    def _prepare_nested(self, config: RunnableConfig, scope: TaskScope) -> Run:
        parent = getattr(scope.services, "run", None)
        if not isinstance(parent, DurableRun | NestedRun) or self.checkpointer is not None:
            return self._prepare(config, None)  # checkpointer=False: none; a store: its own
        cfg = dict(config)
        ctx = NestedContext(
            self.spec, str(cfg.get("run_id")), parent.thread_id, cfg, None, self._get_pool,
            task_pool=self._get_task_pool, cache=self.cache,
        )
        return NestedRun(ctx, resolve_recursion_limit(cfg), parent, scope,
                         Codec(self.spec, parent.codec.serde, parent.codec.namespace),
                         subgraph_namespace(scope.name, scope.task_id,
                                            parent.ns if isinstance(parent, NestedRun) else ""),
                         frozenset(self.interrupt_before), frozenset(self.interrupt_after))

    # -- running --------------------------------------------------------------------------

    def invoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: StreamMode = "values",
        **kwargs: Any,
    ) -> Any:
        """Run the graph to the end and return its output.

        Args:
            input: the input state (a dict or an instance of the input schema).
            config: run config (``run_id``, ``thread_id``, ``recursion_limit``...).
            stream_mode: ``"values"`` returns the final state; any other mode returns the
                list of chunks that mode streamed.

        Returns:
            The output keys that hold a value, or ``None`` when the input wrote nothing.

        Raises:
            GraphRecursionError: ``recursion_limit`` supersteps were not enough.
            InvalidUpdateError: a node returned an update the state cannot take.
            Exception: whatever a node raised, after its retry policy gave up, with the
                node name and run id attached as notes.
        """
        if stream_mode != "values":
            return list(self.stream(input, config, stream_mode=stream_mode, **kwargs))
        if self.has_async_nodes:
            return _run_coroutine_sync(self.ainvoke(input, config, **kwargs))
        return run_sync(self._prepare(config, None, _options(kwargs)), input)

    async def ainvoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: StreamMode = "values",
        **kwargs: Any,
    ) -> Any:
        """Async :meth:`invoke`: async nodes run on the event loop, sync nodes on threads."""
        if stream_mode != "values":
            return [c async for c in self.astream(input, config, stream_mode=stream_mode,
                                                  **kwargs)]
        return await run_async(self._prepare(config, None, _options(kwargs)), input)

    def stream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: StreamMode | Sequence[StreamMode] = "updates",
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Run the graph and yield chunks as it goes.

        ``stream_mode`` (default ``"updates"``, as LangGraph's state graphs) is one mode
        (chunks are yielded as they are) or a list of modes (``(mode, chunk)`` tuples are
        yielded): ``"values"`` every channel after each step that changed one, ``"updates"``
        ``{node: update}`` as each node finishes, ``"custom"`` what nodes emit through
        ``get_stream_writer()`` or a ``writer`` parameter, ``"debug"`` task and result
        events stamped with ``run_id`` and ``thread_id``.
        """
        modes, single = _normalize_modes(stream_mode)
        handoff = _Handoff()
        run = self._prepare(config, Sink(frozenset(modes), handoff.put), _options(kwargs))
        run.gate = handoff.wait_for_demand

        def produce() -> None:
            try:
                if self.has_async_nodes:
                    run.agate = lambda: asyncio.to_thread(handoff.wait_for_demand)
                    asyncio.run(run_async(run, input))
                else:
                    run_sync(run, input)
            except BaseException as exc:  # handed to the consumer
                handoff.put(_FAILED, exc)
            else:
                handoff.put(_DONE, None)

        worker = threading.Thread(
            target=contextvars.copy_context().run, args=(produce,), daemon=True,
            name=f"threadloom-stream-{run.ctx.run_id}",
        )
        worker.start()
        finished = False
        try:
            while True:
                mode, chunk = handoff.get()
                if mode is _DONE:
                    finished = True
                    break
                if mode is _FAILED:
                    finished = True
                    raise chunk
                yield chunk if single else (mode, chunk)
        finally:
            if not finished:
                # the consumer stopped early: no further step starts; a step in flight
                # finishes, then the run ends as cancelled
                run.cancel("the stream was closed by its consumer")
                handoff.close()
            worker.join()

    def stream_to(
        self,
        put: Callable[[str, Any], None],
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: Sequence[StreamMode] = ("values",),
        **kwargs: Any,
    ) -> Any:
        """Run the graph in the calling thread, handing each chunk to ``put(mode, chunk)`` as
        it is produced: :meth:`stream` without its producer thread and its hand-off per chunk
        (a worker that records chunks, rather than pulls them, needs neither). ``put`` must
        not block for long: the run waits for it.

        Returns:
            What :meth:`invoke` would return (with ``"__interrupt__"`` when the run paused),
            so a caller learns how the run ended without reading it back.

        Raises:
            Exception: what :meth:`invoke` raises.
        """
        modes, _ = _normalize_modes(list(stream_mode))
        run = self._prepare(config, Sink(frozenset(modes), put), _options(kwargs))
        if self.has_async_nodes:
            return asyncio.run(run_async(run, input))
        return run_sync(run, input)

    async def astream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: StreamMode | Sequence[StreamMode] = "updates",
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        modes, single = _normalize_modes(stream_mode)
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        handoff = _AsyncHandoff()

        def put(mode: Any, chunk: Any) -> None:
            if threading.get_ident() == loop_thread:
                handoff.put(mode, chunk)
            else:
                loop.call_soon_threadsafe(handoff.put, mode, chunk)

        run = self._prepare(config, Sink(frozenset(modes), put), _options(kwargs))
        run.agate = handoff.wait_for_demand
        task = asyncio.ensure_future(run_async(run, input))

        def done(t: asyncio.Future[Any]) -> None:
            if t.cancelled():
                handoff.put(_FAILED, asyncio.CancelledError())
            elif t.exception() is not None:
                handoff.put(_FAILED, t.exception())
            else:
                handoff.put(_DONE, None)

        task.add_done_callback(done)
        try:
            while True:
                mode, chunk = await handoff.get()
                if mode is _DONE:
                    break
                if mode is _FAILED:
                    raise chunk
                yield chunk if single else (mode, chunk)
        except GeneratorExit:
            # the consumer stopped early: no further step starts; a step in flight
            # finishes, then the run ends as cancelled
            if not task.done():
                run.cancel("the stream was closed by its consumer")
                handoff.close()
                with contextlib.suppress(BaseException):
                    await task
            raise
        finally:
            if not task.done():  # the consumer failed or was cancelled: stop at once
                task.cancel()

    def batch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Invoke the graph on each input, in parallel threads; outputs in input order."""
        configs = _batch_configs(inputs, config)
        if not inputs:
            return []

        def one(pair: tuple[Any, RunnableConfig | None]) -> Any:
            try:
                return self.invoke(pair[0], pair[1], **kwargs)
            except Exception as exc:
                if return_exceptions:
                    return exc
                raise

        if len(inputs) == 1:
            return [one((inputs[0], configs[0]))]
        limit = (configs[0] or {}).get("max_concurrency") or min(len(inputs), 16)
        with concurrent.futures.ThreadPoolExecutor(max_workers=limit) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, one, pair)
                for pair in zip(inputs, configs, strict=True)
            ]
            return [f.result() for f in futures]

    async def abatch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Async :meth:`batch`: the runs share the event loop."""
        configs = _batch_configs(inputs, config)
        coros = [self.ainvoke(i, c, **kwargs) for i, c in zip(inputs, configs, strict=True)]
        return list(await asyncio.gather(*coros, return_exceptions=return_exceptions))

    # -- introspection --------------------------------------------------------------------

    def get_graph(
        self, config: RunnableConfig | None = None, *, xray: bool = False
    ) -> DrawableGraph:
        """The graph's nodes and edges, drawable with ``draw_mermaid()``/``draw_ascii()``."""
        from threadloom.graph._draw import drawable

        return drawable(self.builder)


_OPTIONS = ("durability", "interrupt_before", "interrupt_after", "wait", "timeout")


def _options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Per-invocation options given as keyword arguments (LangGraph accepts these)."""
    unknown = set(kwargs) - set(_OPTIONS) - {"output_keys", "debug", "subgraphs",
                                             "print_mode", "context"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    return {k: kwargs[k] for k in _OPTIONS if k in kwargs}


def _batch_configs(
    inputs: Sequence[Any], config: RunnableConfig | Sequence[RunnableConfig] | None
) -> list[RunnableConfig | None]:
    if isinstance(config, Sequence) and not isinstance(config, dict | str):
        configs: list[RunnableConfig | None] = list(config)
        if len(configs) != len(inputs):
            raise ValueError(f"batch got {len(inputs)} inputs but {len(configs)} configs")
        return configs
    single = cast("RunnableConfig | None", config)
    return [single] * len(inputs)


class _Handoff:
    """Chunks passed from the thread running a stream to its consumer, one step at a time:
    the run waits before each step (:meth:`wait_for_demand`) until the consumer has taken
    every chunk and asks for another, as a lazy generator would."""

    __slots__ = ("_cond", "_items", "_hungry", "_closed")

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: collections.deque[tuple[Any, Any]] = collections.deque()
        self._hungry = False  # the consumer waits for a chunk and none is left
        self._closed = False

    def put(self, mode: Any, chunk: Any) -> None:
        with self._cond:
            self._items.append((mode, chunk))
            self._hungry = False
            self._cond.notify_all()

    def get(self) -> tuple[Any, Any]:
        with self._cond:
            while not self._items:
                self._hungry = True
                self._cond.notify_all()
                self._cond.wait()
            return self._items.popleft()

    def wait_for_demand(self) -> None:
        with self._cond:
            while not (self._hungry or self._closed):
                self._cond.wait()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _AsyncHandoff:
    """:class:`_Handoff` for a run on the consumer's own event loop."""

    __slots__ = ("_items", "_arrived", "_hungry", "_closed")

    def __init__(self) -> None:
        self._items: collections.deque[tuple[Any, Any]] = collections.deque()
        self._arrived = asyncio.Event()
        self._hungry = asyncio.Event()  # set only while no chunk is left
        self._closed = False

    def put(self, mode: Any, chunk: Any) -> None:
        self._items.append((mode, chunk))
        self._hungry.clear()
        self._arrived.set()

    async def get(self) -> tuple[Any, Any]:
        while not self._items:
            self._arrived.clear()
            self._hungry.set()
            await self._arrived.wait()
        return self._items.popleft()

    async def wait_for_demand(self) -> None:
        while not self._closed and not self._hungry.is_set():
            await self._hungry.wait()

    def close(self) -> None:
        self._closed = True
        self._hungry.set()


def _run_coroutine_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,))
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
