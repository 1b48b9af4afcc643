"""``threadloom dev``, ``serve`` and ``worker``: the long-running processes.

Each opens the store, loads the graphs, and runs until SIGTERM or SIGINT (Ctrl+C). Then it
stops taking work, lets running runs finish for up to ``--shutdown-timeout`` seconds and hands
the rest back to the queue (another worker, or the next start, continues them from their last
checkpoint), stops serving, and exits 0. A second signal exits at once (code 1).

With ``--redis URL`` (or ``THREADLOOM_REDIS_URL``) the store's signals travel over Redis
(:mod:`threadloom.checkpoint.redis_signals`); a Redis that does not answer stops the start.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.cli._admin import _sqlite_file, open_runtime_store, store_url
from threadloom.cli._otel import setup_tracing
from threadloom.cli._output import mask_url
from threadloom.errors import InvalidConfigError
from threadloom.worker.registry import (
    DEFAULT_LEASE_TTL,
    LogSettings,
    RuntimeConfig,
    load_graphs,
    read_config,
)

if TYPE_CHECKING:
    from threadloom.graph.compiled import CompiledGraph

__all__ = ["dev", "serve", "worker"]

log = logging.getLogger("threadloom.cli")

API_KEY_ENV = "THREADLOOM_API_KEY"
REDIS_ENV = "THREADLOOM_REDIS_URL"
DEFAULT_CONFIG = "threadloom.toml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_CONCURRENCY = 8
# `dev` runs the wait requests it serves on its own worker, one slot each: a slot per client
# of a busy laptop keeps them off the slower queued path (32 clients: about a fifth more runs/s
# than with 8 slots, measured; idle slots cost a parked thread each)
DEFAULT_DEV_CONCURRENCY = 32


# -- configuration ------------------------------------------------------------------------


def _config(args: argparse.Namespace, *, seeds_if_missing: bool) -> RuntimeConfig:
    """The config file named by ``--config``; without the flag ``./threadloom.toml``, or the
    seed graphs if that does not exist and ``seeds_if_missing``."""
    if args.config is not None:
        return read_config(args.config)
    default = Path(DEFAULT_CONFIG)
    if default.exists() or not seeds_if_missing:
        if not default.exists():
            raise InvalidConfigError(
                f"no {DEFAULT_CONFIG} in {Path.cwd()}: pass --config PATH (a file with a "
                "[graphs] table; see `threadloom serve --help`)")
        return read_config(default)
    return RuntimeConfig.seeds()


def _redis_bus(args: argparse.Namespace) -> Any:
    """The Redis signal bus of ``--redis`` (else ``$THREADLOOM_REDIS_URL``), connected now, or
    ``None`` without either.

    Raises:
        StoreUnavailableError: Redis does not answer.
        InvalidConfigError: not a Redis URL, or the redis extra is missing.
    """
    url = args.redis if args.redis is not None else os.environ.get(REDIS_ENV, "")
    if not url:
        return None
    try:
        from threadloom.checkpoint.redis_signals import RedisSignals
    except ImportError:  # pragma: no cover - depends on the environment
        raise InvalidConfigError(
            "--redis needs the redis extra: pip install 'threadloom[redis]'") from None
    return RedisSignals(url)


def _open(url: str, bus: Any, connections: int | None = None) -> RuntimeStore:
    """The runtime store at ``url`` (``connections``: see ``open_runtime_store``),
    announcing over ``bus`` if there is one."""
    try:
        store = open_runtime_store(url, connections=connections)
    except BaseException:
        if bus is not None:
            bus.close()
        raise
    if bus is not None:
        store.use_signals(bus)
        log.info("signals travel over Redis at %s", bus.url)
    return store


def _close(store: RuntimeStore, bus: Any) -> None:
    store.close()
    if bus is not None:
        bus.close()


@dataclass(slots=True)
class _Process:
    """What every long-running command sets up: its config, store, graphs and shutdown."""

    config: RuntimeConfig
    url: str
    store: RuntimeStore
    graphs: dict[str, Any]
    shutdown: _Shutdown


@contextmanager
def _started(args: argparse.Namespace, *, seeds_if_missing: bool,
             connections: Callable[[RuntimeConfig], int] | None = None) -> Iterator[_Process]:
    """Read the config, set up logging and the signal handlers, open the store (with the
    Redis bus if asked; ``connections`` sizes its pool from the config) and load the graphs;
    close the store and the bus at the end."""
    config = _config(args, seeds_if_missing=seeds_if_missing)
    url = store_url(args.db, config.db)
    _setup_logging(args, config.logs)
    stop_tracing = setup_tracing()
    shutdown = _Shutdown()
    shutdown.install()
    try:
        bus = _redis_bus(args)
        store = _open(url, bus, connections=connections(config) if connections else None)
        capture = _capture(store, config.logs)
        try:
            graphs = load_graphs(config, store, lease_ttl=DEFAULT_LEASE_TTL)
            yield _Process(config, url, store, graphs, shutdown)
        finally:
            if capture is not None:
                capture.close()
            _close(store, bus)
    finally:
        stop_tracing()  # exports the spans still buffered
    log.info("stopped")


def _setup_logging(args: argparse.Namespace, settings: LogSettings) -> None:
    """Log as ``--log-format`` / ``--log-level`` say (else the file's ``[logs]``)."""
    import threadloom.logging

    fmt = getattr(args, "log_format", None) or settings.format
    level = getattr(args, "log_level", None) or settings.level
    threadloom.logging.configure(json=fmt == "json", level=level, stream=sys.stderr)


def _capture(store: RuntimeStore, settings: LogSettings) -> Any:
    """Keep the records of the runs this process executes with them, as ``[logs]`` says."""
    if not settings.capture:
        return None
    import threadloom.logging

    # a run's last records go with the background writer's next batch, not in a write of
    # their own on the run's thread; the logs route flushes what this process holds first
    return threadloom.logging.capture_run_logs(
        store, level=settings.capture_level, max_records=settings.max_records,
        max_message=settings.max_message, flush_at_run_end=False)


def _register_env_key(store: RuntimeStore) -> str | None:
    """Register ``THREADLOOM_API_KEY`` as an admin key of ``default``, if it is set."""
    from threadloom.server.auth import ensure_key

    key = os.environ.get(API_KEY_ENV)
    if key:
        ensure_key(store, key)
    return key or None


def _dev_key(store: RuntimeStore, url: str) -> tuple[str, str]:
    """The key ``threadloom dev`` prints, and where it comes from.

    ``THREADLOOM_API_KEY`` if set. Otherwise, on SQLite, the key saved beside the database
    (``<db>.key``, mode 0600) if it is still valid there, else a new admin key saved there;
    on other stores a new key each start (a key is stored hashed, so an old one cannot be
    shown again)."""
    from threadloom.server.auth import create_key, key_id_of

    env = _register_env_key(store)
    if env:
        return env, f"from {API_KEY_ENV}"
    db = _sqlite_file(url)
    key_file = None if db is None else db.with_name(db.name + ".key")
    if key_file is not None and key_file.exists():
        saved = key_file.read_text(encoding="utf-8").strip()
        record = store.get_key(key_id_of(saved)) if saved else None
        if record is not None and record.revoked_at is None:
            return saved, f"saved in {key_file}"
    _, key = create_key(store, "default", "admin", name="threadloom dev")
    if key_file is None:
        return key, "new for this start; set THREADLOOM_API_KEY to keep one"
    tmp = key_file.with_name(key_file.name + f".{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    os.replace(tmp, key_file)
    return key, f"saved in {key_file}"


# -- signals ------------------------------------------------------------------------------


class _Shutdown:
    """SIGTERM / SIGINT: the first asks for a graceful stop, a second one exits at once."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.count = 0
        self.on_request: list[Any] = []

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1 and self.requested.is_set():
            print("threadloom: second signal, exiting at once", file=sys.stderr, flush=True)
            os._exit(1)
        self.requested.set()
        for callback in self.on_request:
            callback()


# -- the HTTP server ----------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise InvalidConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") \
            from None


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _uvicorn_server(app: Any) -> Any:
    import uvicorn

    # log_config=None: uvicorn's records go to the root handler threadloom.logging set up
    # (text or JSON, like the rest); the level is the root logger's
    config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=10,
                            lifespan="on")
    return uvicorn.Server(config)


def _app(store: RuntimeStore, graphs: dict[str, CompiledGraph], *, worker_check: bool,
         worker: Any = None) -> Any:
    try:
        from threadloom.server import Settings, create_app
    except ImportError as exc:
        raise InvalidConfigError(
            f"the HTTP server needs the server extra ({exc}): pip install 'threadloom[server]'"
        ) from None
    settings = Settings(run_lease=DEFAULT_LEASE_TTL,
                        worker_stale_after=15.0 if worker_check else None)
    return create_app(store, graphs, settings, worker=worker)


def _make_worker(store: RuntimeStore, graphs: dict[str, CompiledGraph],
                 concurrency: int) -> Any:
    from threadloom.worker import Worker

    return Worker(store, graphs, concurrency=concurrency, run_lease=DEFAULT_LEASE_TTL)


def _graph_names(config: RuntimeConfig, graphs: dict[str, CompiledGraph]) -> str:
    names = ", ".join(graphs)
    return names + (" (the built-in seed graphs; a threadloom.toml names yours)"
                    if config.path is None else f" (from {config.path})")


# -- commands -----------------------------------------------------------------------------


def dev(args: argparse.Namespace) -> int:
    """API + worker in one process, on SQLite by default."""
    with _started(args, seeds_if_missing=True) as p:
        config, url, store, graphs = p.config, p.url, p.store, p.graphs
        host = args.host or config.host or DEFAULT_HOST
        port = args.port if args.port is not None else (config.port or DEFAULT_PORT)
        concurrency = args.concurrency or config.concurrency or DEFAULT_DEV_CONCURRENCY
        key, origin = _dev_key(store, url)
        worker = _make_worker(store, graphs, concurrency)
        app = _app(store, graphs, worker_check=True, worker=worker)
        sock = _listen(host, port)
        worker.start()
        try:
            base = _base_url(sock)
            log.info("serving the API and a worker at %s: graphs %s, store %s", base,
                     ", ".join(graphs), mask_url(url))
            print("\n".join([
                "threadloom dev is running",
                f"  graphs:    {_graph_names(config, graphs)}",
                f"  store:     {mask_url(url)}",
                f"  API:       {base}",
                f"  docs:      {base}/docs",
                f"  dashboard: {base}/dashboard  (sign in with the API key)",
                f"  API key:   {key}",
                f"             ({origin}; send it as header X-API-Key)",
                "",
                "Try it:",
                f"  curl -s -X POST {base}/threads/demo-1/runs/wait -H 'X-API-Key: {key}' "
                "-H 'Content-Type: application/json' "
                "-d '{\"assistant_id\": \"" + next(iter(graphs)) + "\", \"input\": {}, "
                "\"if_not_exists\": \"create\"}'",
                "Press Ctrl+C to stop.",
                "",
            ]), flush=True)
            _serve_until_signal(app, sock, p.shutdown)
        finally:
            log.info("stopping the worker (running runs finish or go back to the queue)")
            worker.stop(timeout=args.shutdown_timeout)
    return 0


def serve(args: argparse.Namespace) -> int:
    """The HTTP API only (stateless; run many behind a load balancer)."""
    with _started(args, seeds_if_missing=False) as p:
        host = args.host or p.config.host or DEFAULT_HOST
        port = args.port if args.port is not None else (p.config.port or DEFAULT_PORT)
        if p.url.lower().startswith("sqlite"):
            log.warning("serving from SQLite: every API and worker process must run on this "
                        "machine; use postgresql:// for many machines")
        _register_env_key(p.store)
        app = _app(p.store, p.graphs, worker_check=True)
        sock = _listen(host, port)
        base = _base_url(sock)
        log.info("serving the API at %s: graphs %s, store %s", base, ", ".join(p.graphs),
                 mask_url(p.url))
        print(f"threadloom serve: {base} (docs {base}/docs), graphs {', '.join(p.graphs)}, "
              f"store {mask_url(p.url)}", flush=True)
        _serve_until_signal(app, sock, p.shutdown)
    return 0


def worker(args: argparse.Namespace) -> int:
    """A worker: claims queued runs and executes them (run many, on many machines)."""

    def concurrency_of(config: RuntimeConfig) -> int:
        return int(args.concurrency or config.concurrency or DEFAULT_CONCURRENCY)

    metrics = _metrics_server(args.metrics_host, args.metrics_port)
    try:
        with _started(args, seeds_if_missing=False,
                      connections=lambda config: max(10, concurrency_of(config) + 4)) as p:
            concurrency = concurrency_of(p.config)
            _register_env_key(p.store)
            runner = _make_worker(p.store, p.graphs, concurrency)
            runner.start()
            try:
                print(f"threadloom worker {getattr(runner, 'worker_id', '')}: graphs "
                      f"{', '.join(p.graphs)}, concurrency {concurrency}, store "
                      f"{mask_url(p.url)}", flush=True)
                if metrics is not None:
                    host, port = metrics.server_address[:2]
                    print(f"metrics: http://{_url_host(str(host))}:{port}/metrics", flush=True)
                while not p.shutdown.requested.wait(1.0):
                    pass
            finally:
                log.info("stopping (running runs finish or go back to the queue)")
                runner.stop(timeout=args.shutdown_timeout)
    finally:
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
    return 0


def _metrics_server(host: str, port: int | None) -> Any:
    """Serve the library's Prometheus metrics (the default registry) on ``host:port`` in a
    daemon thread; ``None`` without ``--metrics-port``.

    Raises:
        InvalidConfigError: the metrics are off (``prometheus-client`` is not installed, or
            ``THREADLOOM_METRICS=0``), or the address cannot be listened on.
    """
    if port is None:
        return None
    from threadloom import _metrics

    if not _metrics.available():
        raise InvalidConfigError(
            "--metrics-port needs prometheus-client: pip install 'threadloom[metrics]' "
            f"(and ${_metrics.DISABLE_ENV} not set to 0)"
        )
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        raise InvalidConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    return server


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _serve_until_signal(app: Any, sock: socket.socket, shutdown: _Shutdown) -> None:
    """Run uvicorn on ``sock`` until a signal. uvicorn catches SIGTERM / SIGINT itself while
    it runs, shuts down gracefully, then restores our handlers and re-raises the signal to
    them, which records it."""
    server = _uvicorn_server(app)

    def stop_serving() -> None:
        server.should_exit = True

    shutdown.on_request.append(stop_serving)
    if shutdown.requested.is_set():
        return
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
