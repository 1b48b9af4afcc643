"""``client.assistants``: the registered graphs, one assistant each (read-only)."""

from __future__ import annotations

from typing import Any

from threadloom.client._endpoints import M, Resource, endpoint
from threadloom.client._transport import Call, json_call
from threadloom.client._types import Assistant, GraphDrawing, GraphSchemas

__all__ = ["Assistants"]


def _search_body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class Assistants(Resource[M]):
    """The assistants routes. ``assistant_id`` is an assistant's id or its graph's name."""

    @endpoint
    def search(self, *, graph_id: str | None = None, name: str | None = None,
               metadata: dict[str, Any] | None = None, limit: int = 10, offset: int = 0,
               sort_by: str | None = None, sort_order: str | None = None,
               select: list[str] | None = None) -> Call[list[Assistant]]:
        """The assistants matching the filters, ``limit`` from ``offset``."""
        body = _search_body(graph_id=graph_id, name=name, metadata=metadata, limit=limit,
                            offset=offset, sort_by=sort_by, sort_order=sort_order,
                            select=select)
        return json_call("POST", "/assistants/search", body=body, idempotent=True)

    @endpoint
    def count(self, *, graph_id: str | None = None, name: str | None = None,
              metadata: dict[str, Any] | None = None) -> Call[int]:
        """How many assistants match the filters."""
        body = _search_body(graph_id=graph_id, name=name, metadata=metadata)
        return json_call("POST", "/assistants/count", body=body, idempotent=True)

    @endpoint
    def get(self, assistant_id: str) -> Call[Assistant]:
        """One assistant."""
        return json_call("GET", f"/assistants/{assistant_id}")

    @endpoint
    def get_graph(self, assistant_id: str, *, xray: bool | int = False) -> Call[GraphDrawing]:
        """The graph's nodes and edges; ``xray``: ``True`` or a depth (subgraphs)."""
        params = {"xray": str(xray).lower() if isinstance(xray, bool) else str(xray)}
        return json_call("GET", f"/assistants/{assistant_id}/graph", params=params)

    @endpoint
    def get_schemas(self, assistant_id: str) -> Call[GraphSchemas]:
        """The graph's input, output and state schemas (JSON schema)."""
        return json_call("GET", f"/assistants/{assistant_id}/schemas")

    @endpoint
    def get_subgraphs(self, assistant_id: str, namespace: str | None = None, *,
                      recurse: bool = False) -> Call[dict[str, Any]]:
        """The schemas of the graph's subgraphs by namespace (only ``namespace``'s if
        given; those inside them too if ``recurse``)."""
        path = f"/assistants/{assistant_id}/subgraphs"
        if namespace is not None:
            path += f"/{namespace}"
        return json_call("GET", path, params={"recurse": str(recurse).lower()})

    @endpoint
    def get_versions(self, assistant_id: str, *, metadata: dict[str, Any] | None = None,
                     limit: int = 10, offset: int = 0) -> Call[list[Assistant]]:
        """The assistant's versions (a registered graph has one, version 1)."""
        body = _search_body(metadata=metadata, limit=limit, offset=offset)
        return json_call("POST", f"/assistants/{assistant_id}/versions", body=body,
                         idempotent=True)

    @endpoint
    def set_latest(self, assistant_id: str, version: int) -> Call[Assistant]:
        """Make ``version`` the assistant's current one (operator role)."""
        return json_call("POST", f"/assistants/{assistant_id}/latest",
                         body={"version": version}, idempotent=True)
