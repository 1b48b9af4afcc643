"""threadloom's HTTP client: the runtime's API from Python (``pip install
'threadloom[client]'``).

- :class:`Client` / :class:`AsyncClient`: every route (assistants, threads, runs, health),
  typed results, errors by status (:class:`APIError` and its subclasses), retries of transient
  failures, and run streams that rejoin after a dropped connection (``Last-Event-ID``).
- :class:`RemoteGraph`: a graph on a server with a compiled graph's methods (``invoke``,
  ``stream``, ``get_state``, ``update_state``, ``resume``, ``ainvoke``, ``astream``...), so
  code moves from a local graph to a served one by changing one line.

Example:
    >>> from threadloom.client import RemoteGraph
    >>> graph = RemoteGraph("seed_loop", url="http://127.0.0.1:8000", api_key="tl_...")
    >>> graph.invoke({"step": 0}, {"configurable": {"thread_id": "t-1"}})
    {'step': 3, 'done': True}
"""

try:
    import httpx  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "threadloom.client needs httpx: pip install 'threadloom[client]'"
    ) from exc

from threadloom.client._client import AsyncClient, Client
from threadloom.client._errors import (
    APIError,
    BadRequestError,
    ClientError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RemoteRunError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnauthorizedError,
)
from threadloom.client._remote import RemoteGraph
from threadloom.client._runs import RunOptions
from threadloom.client._sse import StreamPart
from threadloom.client._transport import RetryPolicy
from threadloom.client._types import (
    ApiKeyItem,
    Assistant,
    AuditEvent,
    AuditPage,
    Checkpoint,
    CreatedState,
    CreatedStates,
    GraphDrawing,
    GraphSchemas,
    InterruptItem,
    KeyList,
    Me,
    NamespaceRunsPage,
    NewApiKey,
    NodeTimes,
    Run,
    RunCheckpoint,
    RunCheckpointsPage,
    RunItem,
    RunLogItem,
    RunLogsPage,
    RunMetrics,
    RunStatesPage,
    RunStats,
    RunStatus,
    State,
    StatesPage,
    StateStatus,
    StreamMode,
    Thread,
    ThreadState,
    ThreadStatus,
    ThreadTask,
    UpdateStateResult,
)

__all__ = [
    "APIError",
    "ApiKeyItem",
    "Assistant",
    "AsyncClient",
    "AuditEvent",
    "AuditPage",
    "BadRequestError",
    "Checkpoint",
    "Client",
    "ClientError",
    "ConflictError",
    "CreatedState",
    "CreatedStates",
    "ForbiddenError",
    "GraphDrawing",
    "GraphSchemas",
    "InterruptItem",
    "KeyList",
    "InvalidRequestError",
    "Me",
    "NamespaceRunsPage",
    "NewApiKey",
    "NodeTimes",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RemoteGraph",
    "RemoteRunError",
    "RetryPolicy",
    "Run",
    "RunCheckpoint",
    "RunCheckpointsPage",
    "RunItem",
    "RunLogItem",
    "RunLogsPage",
    "RunMetrics",
    "RunOptions",
    "RunStatesPage",
    "RunStats",
    "RunStatus",
    "ServerError",
    "ServiceUnavailableError",
    "State",
    "StateStatus",
    "StatesPage",
    "StreamMode",
    "StreamPart",
    "Thread",
    "ThreadState",
    "ThreadStatus",
    "ThreadTask",
    "TransportError",
    "UnauthorizedError",
    "UpdateStateResult",
]
