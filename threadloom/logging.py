"""Run-scoped logging: every log record made during a run says which run it belongs to.

Importing threadloom installs (once, chaining the factory that was there) a log-record factory
that sets five attributes on every :class:`logging.LogRecord`, whoever logs it (the engine,
the runtime, or user code with its own ``logging.getLogger("myapp")``):

- ``record.run_id``, ``record.thread_id``, ``record.graph``: the run being executed in this
  context (``None`` outside a run);
- ``record.node``: the node whose execution made the record (``None`` outside a node);
- ``record.attempt``: the node's attempt (1, 2... under a retry policy), or the attempt of the
  ``@task`` call that made the record (``None`` outside a node).

They come from ContextVars that the engine sets for the run and for each node execution, so
they follow a run into the worker threads of sync nodes, the asyncio tasks of async nodes and
the threads of ``@task`` calls. The factory only runs for records that pass their logger's
level check: with logging at WARNING it costs nothing per node.

:func:`configure` sets up a handler (text or one JSON object per line) on the root logger;
:func:`capture_run_logs` keeps the records of each run with the run, in its store, where the
API (``GET /threads/{tid}/runs/{rid}/logs``) and ``threadloom runs logs`` read them.

Example:
    >>> import threadloom.logging
    >>> threadloom.logging.configure(json=True, level="INFO")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json as _json
import logging
import sys
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import IO, TYPE_CHECKING, Any

from threadloom import _context

if TYPE_CHECKING:
    from threadloom.checkpoint.base import RunLog, Store

__all__ = [
    "FIELDS",
    "JsonFormatter",
    "RunLogCapture",
    "TextFormatter",
    "capture_run_logs",
    "configure",
    "flush_pending",
]

FIELDS = ("run_id", "thread_id", "graph", "node", "attempt")
"""The attributes every log record carries (``None`` outside a run)."""

DEFAULT_MAX_RECORDS = 1000
DEFAULT_MAX_MESSAGE = 4000
DEFAULT_FLUSH_INTERVAL = 0.5


class _Run:
    """What the records of one run are stamped with, and where they are captured."""

    __slots__ = ("run_id", "thread_id", "graph", "namespace", "capture")

    def __init__(self, run_id: str, thread_id: str | None, graph: str | None,
                 namespace: str, capture: RunLogCapture | None) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.graph = graph
        self.namespace = namespace
        self.capture = capture


_run: ContextVar[_Run | None] = ContextVar("threadloom_log_run", default=None)
_task_attempt: ContextVar[int | None] = ContextVar("threadloom_log_task_attempt",
                                                   default=None)


# -- the record factory -------------------------------------------------------------------


def _chain(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    current = _context.current_task_or_none

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        run = _run.get()
        if run is None:
            record.run_id = record.thread_id = record.graph = None
            record.node = record.attempt = None
            return record
        record.run_id = run.run_id
        record.thread_id = run.thread_id
        record.graph = run.graph
        scope = current()
        if scope is None:
            record.node = record.attempt = None
        else:
            record.node = scope.name
            task_attempt = _task_attempt.get()
            record.attempt = scope.attempt if task_attempt is None else task_attempt
        return record

    make_record.threadloom = True  # type: ignore[attr-defined]
    return make_record


def _install_factory() -> None:
    """Install the record factory, once per process (chaining the one in place)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "threadloom", False):
        return
    logging.setLogRecordFactory(_chain(previous))


_install_factory()


# -- what the engine calls --------------------------------------------------------------


def enter_run(run_id: str, thread_id: str | None, graph: str | None, namespace: str,
              store: Any) -> Token[_Run | None]:
    """Stamp the records made in this context with the run (engine use); returns the token
    for :func:`exit_run`. ``store``: the run's store, whose capture (if any) keeps them."""
    capture = None
    if store is not None and _captures:
        try:
            capture = _captures.get(store)
        except TypeError:  # a store that cannot be a dictionary key is never captured
            capture = None
    return _run.set(_Run(run_id, thread_id, graph, namespace, capture))


def exit_run(token: Token[_Run | None]) -> None:
    """End what :func:`enter_run` began; hands the run's captured records to its store."""
    run = _run.get()
    _run.reset(token)
    if run is not None and run.capture is not None:
        run.capture.end_run(run.namespace, run.run_id)


def enter_task_attempt(attempt: int) -> Token[int | None]:
    """Stamp the records of a ``@task`` call with its attempt (engine use)."""
    return _task_attempt.set(attempt)


def exit_task_attempt(token: Token[int | None]) -> None:
    """Undo :func:`enter_task_attempt`."""
    _task_attempt.reset(token)


# -- formatting ---------------------------------------------------------------------------


def _iso(created: float) -> str:
    return datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, the five run fields, and ``exc`` (the formatted exception, when there is
    one)."""

    def format(self, record: logging.LogRecord) -> str:
        item: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            item[name] = getattr(record, name, None)
        if record.exc_info:
            item["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            item["exc"] = record.exc_text
        if record.stack_info:
            item["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(item, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message``, with ``[run=... node=... attempt=...]`` before the
    message when the record belongs to a run."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        run_id = getattr(record, "run_id", None)
        if run_id is None:
            return text
        where = f"run={run_id}"
        node = getattr(record, "node", None)
        if node is not None:
            where += f" node={node} attempt={getattr(record, 'attempt', None)}"
        head = f"{record.name}: "
        cut = text.find(head)
        if cut < 0:
            return f"[{where}] {text}"
        cut += len(head)
        return f"{text[:cut]}[{where}] {text[cut:]}"


_configured: logging.Handler | None = None

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def level_number(level: int | str) -> int:
    """A level name (any case) or number as a number.

    Raises:
        ValueError: an unknown level name.
    """
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR")
    return number


def configure(json: bool = False, level: int | str = "INFO",
              stream: IO[str] | None = None) -> logging.Handler:
    """Send every record at ``level`` or above to ``stream`` (default ``sys.stderr``), as
    text or (``json=True``) one JSON object per line.

    The handler goes on the root logger, so records of ``threadloom.*``, of uvicorn and of
    the application's own loggers all come out the same way; uvicorn's loggers are made to
    propagate to it. Calling it again replaces the handler it installed before. When a
    :func:`capture_run_logs` wants lower levels than ``level``, the root logger lets those
    records through to the capture (the handler still prints only ``level`` and above).

    Returns:
        The handler installed.
    """
    global _configured
    number = level_number(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.setLevel(number)
    root = logging.getLogger()
    if _configured is not None:
        root.removeHandler(_configured)
    root.addHandler(handler)
    _configured = handler
    root.setLevel(min([number, *(c.level for c in list(_captures.values()))]))
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    return handler


# -- keeping a run's records with the run ---------------------------------------------------


_captures: weakref.WeakKeyDictionary[Any, RunLogCapture] = weakref.WeakKeyDictionary()


class _CaptureHandler(logging.Handler):
    """On the root logger while a capture is on: hands each record made inside a run whose
    store captures logs to that capture."""

    def emit(self, record: logging.LogRecord) -> None:
        run = _run.get()
        if run is None or run.capture is None or record.name == _log.name:
            return
        run.capture.add(run, record)


_log = logging.getLogger(__name__)
_handler: _CaptureHandler | None = None
_handler_lock = threading.Lock()


def _install_handler() -> None:
    global _handler
    with _handler_lock:
        if _handler is None:
            _handler = _CaptureHandler()
            logging.getLogger().addHandler(_handler)


class RunLogCapture:
    """Keeps the log records of the runs on one store with the runs, in the store's
    ``run_logs`` (see :func:`capture_run_logs`).

    Records are collected in memory as they are logged and written in batches: by a
    background thread every ``flush_interval`` seconds, and when a run ends (or pauses): at
    once, on the run's own thread, with ``flush_at_run_end`` (so the records are in the store
    when ``invoke`` returns), else by waking the background thread (a run then pays no write
    of its own, and its last records follow within milliseconds: the runtime does this, and
    its logs route calls :func:`flush_pending` first). A process that crashes loses at most
    the records of its last ``flush_interval``.
    """

    def __init__(self, store: Store, *, level: int | str = "INFO",
                 max_records: int = DEFAULT_MAX_RECORDS,
                 max_message: int = DEFAULT_MAX_MESSAGE,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                 flush_at_run_end: bool = True) -> None:
        if max_records < 1 or max_message < 1 or flush_interval <= 0:
            raise ValueError("max_records, max_message and flush_interval must be positive")
        self.store = store
        self.level = level_number(level)
        self.max_records = max_records
        self.max_message = max_message
        self.flush_interval = flush_interval
        self.flush_at_run_end = flush_at_run_end
        self._pending: list[RunLog] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()  # the pending list and the counts
        self._writing = threading.Lock()  # one batch written at a time, in order
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, run: _Run, record: logging.LogRecord) -> None:
        """Keep ``record`` of ``run`` (if it is at the capture's level and the run is still
        under its bound)."""
        if record.levelno < self.level or self._closed:
            return
        from threadloom.checkpoint.base import RunLog

        key = (run.namespace, run.run_id)
        with self._lock:
            count = self._counts.get(key, 0)
            if count >= self.max_records:
                return
            self._counts[key] = count + 1
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the caller's bug
            message = str(record.msg)
        exc = None
        if record.exc_info:
            exc = logging.Formatter().formatException(record.exc_info)[: self.max_message * 4]
        scope = _context.current_task_or_none()
        item = RunLog(
            run_id=run.run_id, thread_id=run.thread_id or "", namespace=run.namespace,
            at=record.created, level=record.levelname, logger=record.name,
            message=message[: self.max_message], node=getattr(record, "node", None),
            attempt=getattr(record, "attempt", None),
            step=scope.step if scope is not None else None, exc=exc,
        )
        with self._lock:
            self._pending.append(item)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="threadloom-run-logs")
            self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write the records collected so far; returns how many were written. A store error
        is logged (to the ``threadloom.logging`` logger) and the batch dropped."""
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                return self.store.append_run_logs(batch, max_per_run=self.max_records)
            except Exception as exc:  # noqa: BLE001 - logs never fail a run
                _log.warning("could not store %d log records: %s", len(batch), exc)
                return 0

    def end_run(self, namespace: str, run_id: str) -> None:
        """The run ended or paused in this process: write its records now (or have the
        background thread write them at once: see ``flush_at_run_end``)."""
        if self.flush_at_run_end:
            self.flush()
        else:
            self._wake.set()
        with self._lock:
            self._counts.pop((namespace, run_id), None)

    def close(self) -> None:
        """Write what is left and stop capturing for the store."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.flush()
        if _captures.get(self.store) is self:
            del _captures[self.store]


def capture_run_logs(store: Store, *, level: int | str = "INFO",
                     max_records: int = DEFAULT_MAX_RECORDS,
                     max_message: int = DEFAULT_MAX_MESSAGE,
                     flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                     flush_at_run_end: bool = True) -> RunLogCapture:
    """Keep the log records of every run on ``store`` with the run.

    Records made inside a run (by the engine or by user code, with any logger) at ``level``
    or above are stored in the store's run logs, at most ``max_records`` per run (later ones
    are dropped), each message cut to ``max_message`` characters. Read them with
    ``store.page_run_logs(run_id)``, ``GET /threads/{tid}/runs/{rid}/logs`` or
    ``threadloom runs logs``. A record is only made when its logger's level lets it through:
    set the levels (e.g. with :func:`configure`) so that the records you want exist.

    ``flush_at_run_end``: write a run's records before ``invoke`` returns (the default);
    ``False`` leaves them to the background thread, woken at once (see
    :class:`RunLogCapture`).

    Returns:
        The capture; ``close()`` it to stop (its records are written first). Capturing
        again on the same store replaces the previous capture.
    """
    capture = RunLogCapture(store, level=level, max_records=max_records,
                            max_message=max_message, flush_interval=flush_interval,
                            flush_at_run_end=flush_at_run_end)
    previous = _captures.get(store)
    if previous is not None:
        previous.close()
    _captures[store] = capture
    _install_handler()
    root = logging.getLogger()
    if _configured is not None and root.level > capture.level:
        root.setLevel(capture.level)
    return capture


def flush_pending(store: Store) -> None:
    """Write the records this process has collected for ``store`` so far (if it captures
    them): a reader in the same process then sees every record of a run that has ended."""
    capture = _captures.get(store)
    if capture is not None:
        capture.flush()
