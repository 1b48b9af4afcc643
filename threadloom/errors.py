"""Errors raised by threadloom.

Every error a user can meet derives from :class:`ThreadloomError` and carries a stable
``code`` that the HTTP API returns unchanged. Control-flow signals (an interrupt pausing a
run, a run being cancelled) derive from :class:`BaseException` instead, so that user code
written as ``except Exception:`` cannot swallow them by accident.

The tree::

    ThreadloomError                     threadloom_error
    ├── GraphValidationError            invalid_graph        (also ValueError)
    ├── InvalidConfigError              invalid_config       (also ValueError)
    ├── InvalidUpdateError              invalid_update
    │   └── InvalidRouteError           invalid_route        (also KeyError, ValueError)
    ├── GraphRecursionError             recursion_limit      (also RecursionError)
    ├── EmptyInputError                 empty_input
    ├── NodeTimeoutError                node_timeout         (also TimeoutError)
    ├── RunTimeoutError                 run_timeout          (also TimeoutError)
    ├── CircuitOpenError                circuit_open
    ├── RunConflictError                run_conflict
    ├── RunNotFoundError                run_not_found        (also KeyError)
    ├── ThreadBusyError                 thread_busy
    ├── LeaseLostError                  lease_lost
    ├── CheckpointConflictError         checkpoint_conflict
    ├── SerializationError              serialization_failed
    │   └── TypeNotAllowedError         type_not_allowed
    ├── StoreError                      store_error
    │   ├── StoreUnavailableError       store_unavailable
    │   ├── StoreAccessError            store_access_denied
    │   ├── StoreCorruptError           store_corrupt
    │   ├── MigrationError              migration_failed
    │   ├── DecryptionError             decryption_failed
    │   └── PickleNotAllowedError       pickle_not_allowed
    └── CheckpointNotFoundError         checkpoint_not_found (also KeyError)

    BaseException
    ├── GraphInterrupt                  the run paused (interrupt() or a breakpoint)
    ├── ParentCommand                   a subgraph node sent Command(graph=PARENT)
    └── RunCancelled                    the run was cancelled
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from threadloom.types import Interrupt

__all__ = [
    "CheckpointConflictError",
    "CheckpointNotFoundError",
    "CircuitOpenError",
    "DecryptionError",
    "EmptyInputError",
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphValidationError",
    "InvalidConfigError",
    "InvalidRouteError",
    "InvalidUpdateError",
    "LeaseLostError",
    "MigrationError",
    "NodeTimeoutError",
    "ParentCommand",
    "PickleNotAllowedError",
    "RunCancelled",
    "RunConflictError",
    "RunNotFoundError",
    "RunTimeoutError",
    "SerializationError",
    "StoreAccessError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "ThreadBusyError",
    "ThreadloomError",
    "TypeNotAllowedError",
]


class ThreadloomError(Exception):
    """Root of every threadloom error; ``code`` is stable and machine-readable."""

    code: ClassVar[str] = "threadloom_error"


class GraphValidationError(ThreadloomError, ValueError):
    """The graph is malformed: unknown node, no entry point, reserved name, unreachable node."""

    code = "invalid_graph"


class InvalidConfigError(ThreadloomError, ValueError):
    """A config value (run id, thread id, durability, limit...) is not acceptable."""

    code = "invalid_config"


class InvalidUpdateError(ThreadloomError):
    """A node produced an update the state cannot take (e.g. two writes to a plain field)."""

    code = "invalid_update"


class InvalidRouteError(InvalidUpdateError, KeyError, ValueError):
    """A conditional edge chose no valid destination (unknown name, or a result missing
    from its path map). A ``KeyError`` and ``ValueError`` too, as LangGraph raises those."""

    code = "invalid_route"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "invalid route"


class GraphRecursionError(ThreadloomError, RecursionError):
    """The run reached ``recursion_limit`` supersteps without finishing."""

    code = "recursion_limit"


class EmptyInputError(ThreadloomError):
    """``invoke(None)`` on a thread that has nothing to continue."""

    code = "empty_input"


class NodeTimeoutError(ThreadloomError, TimeoutError):
    """A node execution ran longer than its ``timeout``."""

    code = "node_timeout"


class RunTimeoutError(ThreadloomError, TimeoutError):
    """The whole run ran longer than the ``timeout`` given in its config."""

    code = "run_timeout"


class CircuitOpenError(ThreadloomError):
    """A node's circuit breaker is open: its dependency failed too often recently."""

    code = "circuit_open"


class RunConflictError(ThreadloomError):
    """A run id is already recorded for another thread or graph, or with other input."""

    code = "run_conflict"


class RunNotFoundError(ThreadloomError, KeyError):
    """No run is recorded under the given run id."""

    code = "run_not_found"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "run not found"


class ThreadBusyError(ThreadloomError):
    """The thread already has an active run (one writer per thread)."""

    code = "thread_busy"


class LeaseLostError(ThreadloomError):
    """This writer's lease on the thread expired and was taken over; it may not commit."""

    code = "lease_lost"


class CheckpointConflictError(ThreadloomError):
    """The thread's latest checkpoint is not the one this writer continued from."""

    code = "checkpoint_conflict"


class SerializationError(ThreadloomError):
    """A value cannot be stored: the serializer cannot encode it (a socket, a lambda, a
    structure nested too deeply). The message names the field: a state key, a node's output,
    the run's input."""

    code = "serialization_failed"


class TypeNotAllowedError(SerializationError):
    """A value's type is not one the default serializer reconstructs: not plain JSON data,
    not a listed standard type, or a dataclass / Pydantic model / enum from a module the
    application did not register (``allowed_modules``; ``[serde] allowed_modules`` in
    ``threadloom.toml``). Raised when storing it, and when reading a stored value that names
    such a type."""

    code = "type_not_allowed"


class StoreError(ThreadloomError):
    """The store failed in a way that is not one of the more specific errors."""

    code = "store_error"


class PickleNotAllowedError(StoreError):
    """A stored value is a pickle (written by an earlier threadloom) and the serializer does
    not allow pickle. Nothing was unpickled; rewrite such rows with ``threadloom migrate
    --rewrite-values``, or read them with ``JsonPlusSerializer(allow_pickle=True)`` if the
    store is trusted like code."""

    code = "pickle_not_allowed"


class StoreUnavailableError(StoreError):
    """The store could not be reached (after retrying where that is safe)."""

    code = "store_unavailable"


class StoreAccessError(StoreError):
    """The database server answered and refused for good: the database or role does not
    exist, authentication failed, or the role may not connect. Retrying cannot help (unlike
    :class:`StoreUnavailableError`); the configuration has to change."""

    code = "store_access_denied"


class StoreCorruptError(StoreError):
    """The store's file or schema is not a threadloom database: not a database at all,
    damaged, or another application's tables where threadloom's belong."""

    code = "store_corrupt"


class MigrationError(StoreError):
    """The store's schema could not be migrated, or is newer than this code."""

    code = "migration_failed"


class DecryptionError(StoreError):
    """A stored value could not be decrypted: wrong key, or the data was altered."""

    code = "decryption_failed"


class CheckpointNotFoundError(ThreadloomError, KeyError):
    """A ``checkpoint_id`` is well formed but names no checkpoint of the thread (a malformed
    one is an :class:`InvalidConfigError`). A ``KeyError`` too, as a missing key."""

    code = "checkpoint_not_found"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "checkpoint not found"


class GraphInterrupt(BaseException):  # noqa: N818 - a signal, not an error
    """Raised inside a run to pause it; carries the pending interrupts.

    It derives from ``BaseException`` so that ``except Exception`` in a node does not catch
    it. The engine catches it, records the pause and returns control to the caller.
    """

    def __init__(self, interrupts: Sequence[Interrupt] = (), index: int = 0) -> None:
        super().__init__(tuple(interrupts))
        self.interrupts: tuple[Interrupt, ...] = tuple(interrupts)
        self.index = index  # which interrupt() call of the execution raised it


class ParentCommand(BaseException):  # noqa: N818 - a signal, not an error
    """Carries a ``Command(graph=Command.PARENT)`` out of a subgraph to the parent graph's
    node that runs it, which applies the command as its own result."""

    def __init__(self, command: Any) -> None:
        super().__init__(command)
        self.command = command


class RunCancelled(BaseException):  # noqa: N818 - a signal, not an error
    """Raised inside a run that was cancelled; user code should let it propagate."""

    def __init__(self, reason: str = "cancelled", *args: Any) -> None:
        super().__init__(reason, *args)
        self.reason = reason
