"""The graph registry: which graphs a server or worker runs, read from ``threadloom.toml``.

``threadloom dev``, ``serve`` and ``worker`` all load the same file, so that every process
knows the same graphs under the same names::

    db = "postgresql://postgres@db:5432/app"   # optional; --db and THREADLOOM_DB win

    [graphs]
    seed_loop = "my_module:graph"             # the config file's folder is on sys.path
    chat = "./graphs/chat.py:builder"          # or a file, relative to the config file

    [server]                                   # optional; flags win
    host = "0.0.0.0"
    port = 8000

    [worker]                                   # optional; flags win
    concurrency = 8

    [serde]                                    # optional
    allowed_modules = ["my_app.models"]        # their dataclasses / models / enums may be stored

    [logs]                                     # optional; flags win
    format = "json"                            # or "text" (the default)
    level = "INFO"                             # what the process prints
    capture = true                             # keep each run's records with the run
    capture_level = "INFO"                     # ... at this level and above
    max_records = 1000                         # ... at most this many per run
    max_message = 4000                         # ... each message cut to this many characters

Each graph's attribute is a compiled graph, an uncompiled :class:`~threadloom.graph.StateGraph`,
or a zero-argument factory returning either (an ``@entrypoint`` function is a compiled graph).
:func:`load_graphs` binds every one to the server's store: it compiles the builder again with the
store as checkpointer and the registry name as the graph's name, keeping what the graph was
compiled with (breakpoints, durability, serializer, cache, default config).

Without a config file, ``threadloom dev`` runs the seed graphs of :mod:`threadloom.examples`
(:data:`SEED_GRAPHS`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import tomllib
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from threadloom.checkpoint.base import Store
from threadloom.checkpoint.serde import allow_modules
from threadloom.errors import InvalidConfigError
from threadloom.graph.compiled import CompiledGraph
from threadloom.graph.state import StateGraph

__all__ = [
    "DEFAULT_LEASE_TTL",
    "LogSettings",
    "SEED_GRAPHS",
    "RuntimeConfig",
    "bind_graph",
    "load_graphs",
    "read_config",
    "resolve_graph",
]

DEFAULT_LEASE_TTL = 5.0
"""Seconds a run's lease on its thread lasts without a heartbeat, for graphs the runtime runs.
Short, so that a worker that dies hands its threads to another worker within seconds."""

SEED_GRAPHS: Mapping[str, str] = {
    "seed_loop": "threadloom.examples.loop:graph",
    "chat": "threadloom.examples.chat:graph",
    "fetch": "threadloom.examples.fetch:graph",
    "cloud": "threadloom.examples.cloud:graph",
    "review": "threadloom.examples.review:graph",
}
"""The graphs ``threadloom dev`` serves when there is no ``threadloom.toml``."""

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "server": {"host": str, "port": int},
    "worker": {"concurrency": int},
}


@dataclass(frozen=True, slots=True)
class LogSettings:
    """``[logs]``: how the process logs, and which records it keeps with each run (see
    :mod:`threadloom.logging`).

    Attributes:
        format: ``"text"`` or ``"json"`` (one object per line); ``--log-format`` wins.
        level: the lowest level printed; ``--log-level`` wins.
        capture: whether each run's records are kept with the run (in the store).
        capture_level: the lowest level kept.
        max_records: records kept per run (later ones are dropped).
        max_message: characters kept of each message.
    """

    format: str = "text"
    level: str = "INFO"
    capture: bool = True
    capture_level: str = "INFO"
    max_records: int = 1000
    max_message: int = 4000


_LOG_KEYS: dict[str, type] = {"format": str, "level": str, "capture": bool,
                              "capture_level": str, "max_records": int, "max_message": int}
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_settings(path: Path, table: Any) -> LogSettings:
    """``[logs]``, checked."""
    if not isinstance(table, dict):
        raise InvalidConfigError(f"{path}: logs must be a table ([logs])")
    for key, value in table.items():
        kind = _LOG_KEYS.get(key)
        if kind is None:
            raise InvalidConfigError(
                f"{path}: unknown key {key!r} in [logs]; it takes {', '.join(_LOG_KEYS)}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidConfigError(
                f"{path}: [logs] {key} must be {_kind_name(kind)}, got {value!r}")
    settings = LogSettings(**{k: v.upper() if k.endswith("level") else v
                              for k, v in table.items()})
    if settings.format not in ("text", "json"):
        raise InvalidConfigError(f"{path}: [logs] format must be \"text\" or \"json\", "
                                 f"got {settings.format!r}")
    for name in ("level", "capture_level"):
        if getattr(settings, name) not in _LEVELS:
            raise InvalidConfigError(f"{path}: [logs] {name} must be one of "
                                     f"{', '.join(_LEVELS)}, got {getattr(settings, name)!r}")
    for name in ("max_records", "max_message"):
        if getattr(settings, name) < 1:
            raise InvalidConfigError(f"{path}: [logs] {name} must be at least 1")
    return settings


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """What a ``threadloom.toml`` says.

    Attributes:
        path: the file (``None``: the built-in seed graphs, no file).
        graphs: registry name -> ``"module:attr"`` or ``"./file.py:attr"``.
        db: the store URL, if the file names one.
        host: ``[server] host``.
        port: ``[server] port``.
        concurrency: ``[worker] concurrency``.
        allowed_modules: ``[serde] allowed_modules``: modules whose dataclasses, Pydantic
            models, enums and named tuples stored values may be (see
            :mod:`threadloom.checkpoint.serde`); each graph's own module is allowed too.
        logs: ``[logs]``.
    """

    path: Path | None
    graphs: dict[str, str] = field(default_factory=dict)
    db: str | None = None
    host: str | None = None
    port: int | None = None
    concurrency: int | None = None
    allowed_modules: tuple[str, ...] = ()
    logs: LogSettings = field(default_factory=LogSettings)

    @property
    def base(self) -> Path:
        """The folder relative paths and module imports start from."""
        return self.path.parent if self.path is not None else Path.cwd()

    @classmethod
    def seeds(cls) -> RuntimeConfig:
        """The configuration of ``threadloom dev`` without a file: the seed graphs."""
        return cls(None, dict(SEED_GRAPHS))


def read_config(path: str | Path) -> RuntimeConfig:
    """Read and check a ``threadloom.toml`` (the graphs are not imported yet).

    Raises:
        InvalidConfigError: the file is missing or unreadable, is not TOML, or has an unknown
            key, a value of the wrong type, or no graphs. The message names the file.
    """
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"{path}: cannot read the config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"db", "graphs", "serde", "logs", *_SECTIONS})
    if unknown:
        raise InvalidConfigError(
            f"{path}: unknown key {unknown[0]!r}; the file takes db, [graphs], [server], "
            "[worker], [serde] and [logs]")
    db = data.get("db")
    if db is not None and (not isinstance(db, str) or not db):
        raise InvalidConfigError(f"{path}: db must be a store URL string, e.g. "
                                 "\"sqlite:///./threadloom.db\"")
    graphs = data.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise InvalidConfigError(
            f"{path}: no graphs; add a [graphs] table, e.g.\n[graphs]\n"
            "my_graph = \"my_module:graph\"")
    for name, spec in graphs.items():
        if not _NAME.match(name):
            raise InvalidConfigError(
                f"{path}: graph name {name!r}: use letters, digits, '_', '-' and '.' "
                "(at most 128 characters)")
        if not isinstance(spec, str) or ":" not in spec:
            raise InvalidConfigError(
                f"{path}: graph {name!r}: expected \"module:attr\" or \"./file.py:attr\", "
                f"got {spec!r}")
    values: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise InvalidConfigError(f"{path}: {section} must be a table ([{section}])")
        for key, value in table.items():
            kind = keys.get(key)
            if kind is None:
                raise InvalidConfigError(
                    f"{path}: unknown key {key!r} in [{section}]; it takes "
                    f"{', '.join(keys)}")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise InvalidConfigError(
                    f"{path}: [{section}] {key} must be {_kind_name(kind)}, got {value!r}")
            values[key] = value
    return RuntimeConfig(path, dict(graphs), db=_relative_sqlite(db, path.parent),
                         allowed_modules=_serde_modules(path, data.get("serde", {})),
                         logs=_log_settings(path, data.get("logs", {})), **values)


def _serde_modules(path: Path, table: Any) -> tuple[str, ...]:
    """``[serde] allowed_modules``: a list of dotted module names."""
    if not isinstance(table, dict):
        raise InvalidConfigError(f"{path}: serde must be a table ([serde])")
    unknown = sorted(set(table) - {"allowed_modules"})
    if unknown:
        raise InvalidConfigError(
            f"{path}: unknown key {unknown[0]!r} in [serde]; it takes allowed_modules")
    modules = table.get("allowed_modules", [])
    if not isinstance(modules, list) or not all(
        isinstance(m, str) and m and all(p.isidentifier() for p in m.split("."))
        for m in modules
    ):
        raise InvalidConfigError(
            f"{path}: [serde] allowed_modules must be a list of module names, e.g. "
            f"[\"my_app.models\"], got {modules!r}")
    return tuple(modules)


def _relative_sqlite(db: str | None, base: Path) -> str | None:
    """A relative SQLite path in the file is relative to the file, not to the working
    directory, so that every process started with the file opens the same database."""
    prefix = "sqlite:///"
    if db is None or not db.startswith(prefix):
        return db
    rest = db[len(prefix):]
    if rest.startswith("/") or rest.startswith(":memory:") or not rest:
        return db
    return prefix + str(base / rest)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if kind is bool:
        return "true or false"
    return "an integer" if kind is int else "a string"


def load_graphs(config: RuntimeConfig | str | Path | None, store: Store, *,
                lease_ttl: float = DEFAULT_LEASE_TTL) -> dict[str, CompiledGraph]:
    """Import every graph a config names and bind it to ``store``.

    Args:
        config: a :class:`RuntimeConfig`, the path of a ``threadloom.toml``, or ``None`` for
            the seed graphs (:data:`SEED_GRAPHS`).
        store: the store the graphs run on (the server's, or the worker's).
        lease_ttl: seconds a run's thread lease lasts without a heartbeat.

    Returns:
        Registry name -> a graph compiled with ``store`` as its checkpointer and the registry
        name as its name.

    Raises:
        InvalidConfigError: the file, a module or an attribute cannot be found or imported, or
            an attribute is not a graph; the message names the file and the graph.
    """
    if config is None:
        config = RuntimeConfig.seeds()
    elif not isinstance(config, RuntimeConfig):
        config = read_config(config)
    if config.allowed_modules:
        if config.path is not None and str(config.base) not in sys.path:
            sys.path.insert(0, str(config.base))
        allow_modules(*config.allowed_modules)
    return {name: resolve_graph(config, name, store, lease_ttl=lease_ttl)
            for name in config.graphs}


def resolve_graph(config: RuntimeConfig, name: str, store: Store, *,
                  lease_ttl: float = DEFAULT_LEASE_TTL) -> CompiledGraph:
    """Import the graph registered as ``name`` and bind it to ``store`` (see
    :func:`load_graphs`)."""
    spec = config.graphs[name]
    where = f"{config.path}: graph {name!r}" if config.path else f"seed graph {name!r}"
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise InvalidConfigError(
            f"{where}: expected \"module:attr\" or \"./file.py:attr\", got {spec!r}")
    module = _import(target, config.base if config.path is not None else None, where)
    allow_modules(module.__name__)  # the application's code: its types may be stored
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidConfigError(
                f"{where}: {target} has no attribute {attr!r}") from None
    return bind_graph(obj, store, name, lease_ttl=lease_ttl, where=f"{where} ({spec})")


def bind_graph(obj: Any, store: Store, name: str, *, lease_ttl: float = DEFAULT_LEASE_TTL,
               where: str | None = None) -> CompiledGraph:
    """Compile ``obj`` (a compiled graph, a ``StateGraph``, or a zero-argument factory
    returning either) with ``store`` as its checkpointer and ``name`` as its name.

    A compiled graph keeps its breakpoints, durability, serializer, cache, debug flag and
    default config; only the checkpointer, the name and the lease time change.

    Raises:
        InvalidConfigError: ``obj`` is none of those, or the factory failed.
    """
    where = where or f"graph {name!r}"
    if not isinstance(obj, CompiledGraph | StateGraph):
        if not callable(obj) or inspect.isclass(obj):
            raise InvalidConfigError(f"{where}: {_describe(obj)} is not a graph; expected a "
                                     "compiled graph, a StateGraph, or a zero-argument "
                                     "function returning one")
        try:
            inspect.signature(obj).bind()
        except TypeError:
            raise InvalidConfigError(
                f"{where}: the factory {_describe(obj)} must take no arguments") from None
        except ValueError:  # no signature (a builtin): let the call decide
            pass
        try:
            made = obj()
        except Exception as exc:
            raise InvalidConfigError(f"{where}: the factory failed: {_failure(exc)}") from exc
        if not isinstance(made, CompiledGraph | StateGraph):
            raise InvalidConfigError(
                f"{where}: the factory returned {_describe(made)}; expected a compiled graph "
                "or a StateGraph")
        obj = made
    try:
        if isinstance(obj, StateGraph):
            return obj.compile(checkpointer=store, name=name, lease_ttl=lease_ttl)
        source: CompiledGraph = obj
        compiled = source.builder.compile(
            checkpointer=store,
            cache=source.cache,
            interrupt_before=source.interrupt_before,
            interrupt_after=source.interrupt_after,
            durability=source.durability,
            debug=source.debug,
            name=name,
            serde=source.serde,
            lease_ttl=lease_ttl,
        )
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"{where}: {exc}") from exc
    except Exception as exc:  # GraphValidationError and the like, from user code
        raise InvalidConfigError(f"{where}: the graph does not compile: {_failure(exc)}") \
            from exc
    return compiled.with_config(source.config) if source.config else compiled


def _describe(obj: Any) -> str:
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return f"function {obj.__qualname__}()"
    if inspect.isclass(obj):
        return f"class {obj.__qualname__}"
    if inspect.ismodule(obj):
        return f"module {obj.__name__}"
    return f"a {type(obj).__name__}"


def _failure(exc: BaseException) -> str:
    """``Type: message (at file:line)``: the last frame, without a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = str(exc)
    return f"{type(exc).__name__}: {text}{at}" if text else f"{type(exc).__name__}{at}"


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import(target: str, base: Path | None, where: str) -> ModuleType:
    """Import ``target`` (a module name, or a file relative to ``base``); ``base`` also goes
    on ``sys.path`` (``None``: the built-in graphs, nothing added)."""
    if _is_file(target):
        return _import_file(target, base or Path.cwd(), where)
    folder = str(base) if base is not None else "the installed packages"
    if base is not None and folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (target == missing or target.startswith(missing + ".")):
            raise InvalidConfigError(
                f"{where}: no module named {missing!r} (looked in {folder}"
                f"{' and the installed packages' if base is not None else ''})") from None
        raise InvalidConfigError(
            f"{where}: importing {target} failed: {_failure(exc)}") from exc
    except Exception as exc:
        raise InvalidConfigError(f"{where}: importing {target} failed: {_failure(exc)}") \
            from exc


def _import_file(target: str, base: Path, where: str) -> ModuleType:
    path = (base / target).resolve()
    if not path.is_file():
        raise InvalidConfigError(f"{where}: file {path} not found")
    # one module per file, under a name derived from its path relative to the config folder
    # (the same in every process and on every machine, so stored values find their classes)
    try:
        shown = path.relative_to(base.resolve()).as_posix()
    except ValueError:
        shown = path.as_posix()
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha256(shown.encode()).hexdigest()[:8]
    module_name = f"threadloom_graph_{stem}_{digest}"
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InvalidConfigError(f"{where}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[module_name]
        if not isinstance(exc, Exception):
            raise
        raise InvalidConfigError(f"{where}: importing {path} failed: {_failure(exc)}") \
            from exc
    return module
