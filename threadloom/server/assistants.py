"""Routes of the assistants resource (LangGraph Platform shape).

Every registered graph is one assistant: its id is :func:`~threadloom.server.deps.
assistant_id_for` of the graph's name (a UUID, as LangGraph's clients expect), and the name
itself works wherever an assistant id does. Assistants are read-only here: search, count, get,
the graph's drawing, its schemas and subgraphs, and its one version (1). Reads need the
``viewer`` role; ``set_latest`` (to version 1, the only one) the ``operator`` role.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from threadloom.graph.compiled import CompiledGraph
from threadloom.server._shapes import iso, json_response
from threadloom.server._threadinfo import find_graph
from threadloom.server.deps import Graphs, Operator, Viewer, assistant_id_for
from threadloom.server.errors import InvalidRequestError, NotFoundError
from threadloom.server.thread_models import MAX_OFFSET

__all__ = ["AssistantModel", "AssistantSearchRequest", "router"]

router = APIRouter(tags=["assistants"])

AssistantField = Literal["assistant_id", "graph_id", "name", "description", "config",
                         "context", "metadata", "created_at", "updated_at", "version"]


class AssistantSearchRequest(BaseModel):
    """``POST /assistants/search``."""

    graph_id: str | None = None
    name: str | None = Field(None, description="case-insensitive part of the name")
    metadata: dict[str, Any] | None = Field(None, description="JSON containment filter")
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at",
                     "updated_at"] | None = None
    sort_order: Literal["asc", "desc", "ASC", "DESC"] | None = None
    select: list[AssistantField] | None = None


class AssistantCountRequest(BaseModel):
    """``POST /assistants/count``."""

    graph_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] | None = None


class AssistantVersionsRequest(BaseModel):
    """``POST /assistants/{assistant_id}/versions``."""

    metadata: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class SetLatestRequest(BaseModel):
    """``POST /assistants/{assistant_id}/latest``."""

    version: int


class AssistantModel(BaseModel):
    """An assistant: one registered graph."""

    assistant_id: str
    graph_id: str
    name: str
    description: str | None
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    version: int


class GraphSchemasModel(BaseModel):
    """A graph's schemas as JSON schema (``null`` where there is none)."""

    graph_id: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    state_schema: dict[str, Any] | None
    config_schema: dict[str, Any] | None
    context_schema: dict[str, Any] | None


def _assistant(request: Request, name: str) -> dict[str, Any]:
    created = iso(request.app.state.started_at)
    return {
        "assistant_id": assistant_id_for(name),
        "graph_id": name,
        "name": name,
        "description": None,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "created_at": created,
        "updated_at": created,
        "version": 1,
    }


def _find(graphs: Mapping[str, CompiledGraph], assistant_id: str) -> tuple[str, CompiledGraph]:
    found = find_graph(graphs, assistant_id)
    if found is None:
        raise NotFoundError(f"no assistant {assistant_id!r}")
    return found


def _matching(request: Request, graphs: Mapping[str, CompiledGraph], graph_id: str | None,
              name: str | None, metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
    if graph_id is not None and graph_id not in graphs:
        raise NotFoundError(f"no graph {graph_id!r}")
    found = []
    for registered in graphs:
        item = _assistant(request, registered)
        if graph_id is not None and registered != graph_id:
            continue
        if name and name.lower() not in item["name"].lower():
            continue
        if metadata and any(item["metadata"].get(k) != v for k, v in metadata.items()):
            continue
        found.append(item)
    return found


@router.post("/assistants/search", response_model=list[AssistantModel],
             summary="Search assistants")
def search_assistants(body: AssistantSearchRequest, request: Request, graphs: Graphs,
                      who: Viewer) -> Response:
    """The assistants (one per registered graph) matching ``graph_id``, ``name`` and
    ``metadata``, ``limit`` from ``offset``; ``X-Pagination-Next`` gives the next offset."""
    items = _matching(request, graphs, body.graph_id, body.name, body.metadata)
    key = body.sort_by or "graph_id"
    items.sort(key=lambda a: str(a[key]).lower(),
               reverse=(body.sort_order or "asc").lower() == "desc")
    page = items[body.offset:body.offset + body.limit]
    if body.select:
        page = [{k: a[k] for k in body.select} for a in page]
    headers = {"X-Pagination-Total": str(len(items))}
    if len(items) > body.offset + body.limit:
        headers["X-Pagination-Next"] = str(body.offset + body.limit)
    return json_response(page, headers=headers)


@router.post("/assistants/count", response_model=int, summary="Count assistants")
def count_assistants(body: AssistantCountRequest, request: Request, graphs: Graphs,
                     who: Viewer) -> Response:
    """How many assistants match the filters of a search."""
    return json_response(len(_matching(request, graphs, body.graph_id, body.name,
                                       body.metadata)))


@router.get("/assistants/{assistant_id}", response_model=AssistantModel,
            summary="Get an assistant")
def get_assistant(assistant_id: str, request: Request, graphs: Graphs,
                  who: Viewer) -> Response:
    """The assistant of a registered graph, by assistant id or graph name."""
    name, _ = _find(graphs, assistant_id)
    return json_response(_assistant(request, name))


@router.post("/assistants/{assistant_id}/versions", response_model=list[AssistantModel],
             summary="List an assistant's versions")
def get_assistant_versions(assistant_id: str, body: AssistantVersionsRequest,
                           request: Request, graphs: Graphs, who: Viewer) -> Response:
    """An assistant's versions: a registered graph's assistant has one, version 1."""
    name, _ = _find(graphs, assistant_id)
    item = _assistant(request, name)
    found = [] if body.metadata and any(item["metadata"].get(k) != v
                                        for k, v in body.metadata.items()) else [item]
    return json_response(found[body.offset:body.offset + body.limit])


@router.post("/assistants/{assistant_id}/latest", response_model=AssistantModel,
             summary="Set an assistant's latest version")
def set_latest_version(assistant_id: str, body: SetLatestRequest, request: Request,
                       graphs: Graphs, who: Operator) -> Response:
    """Make ``version`` the assistant's current version: only version 1 exists."""
    name, _ = _find(graphs, assistant_id)
    if body.version != 1:
        raise NotFoundError(f"assistant {assistant_id!r} has no version {body.version}")
    return json_response(_assistant(request, name))


@router.get("/assistants/{assistant_id}/subgraphs", summary="Get an assistant's subgraphs")
def get_subgraphs(assistant_id: str, graphs: Graphs, who: Viewer,
                  recurse: bool = False) -> Response:
    """The schemas of the graph's subgraph nodes, by namespace (the node's name; ``a|b`` for
    a subgraph ``b`` inside subgraph ``a`` when ``recurse``)."""
    _, graph = _find(graphs, assistant_id)
    return json_response(dict(_subgraphs(graph, "", recurse)))


@router.get("/assistants/{assistant_id}/subgraphs/{namespace}",
            summary="Get one of an assistant's subgraphs")
def get_subgraph(assistant_id: str, namespace: str, graphs: Graphs, who: Viewer,
                 recurse: bool = False) -> Response:
    """The schemas of the subgraph at ``namespace`` (and of those inside it if
    ``recurse``)."""
    _, graph = _find(graphs, assistant_id)
    found = {ns: schemas for ns, schemas in _subgraphs(graph, "", True)
             if ns == namespace or recurse and ns.startswith(namespace + "|")}
    return json_response(found)


def _subgraphs(graph: CompiledGraph, prefix: str,
               recurse: bool) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for name, node in graph.spec.nodes.items():
        sub = node.subgraph
        if not isinstance(sub, CompiledGraph):
            continue
        ns = f"{prefix}{name}"
        found.append((ns, _schemas(sub)))
        if recurse:
            found += _subgraphs(sub, ns + "|", True)
    return found


@router.get("/assistants/{assistant_id}/graph", summary="Get an assistant's graph",
            response_model=dict[str, list[dict[str, Any]]])
def get_assistant_graph(
    assistant_id: str, graphs: Graphs, who: Viewer,
    xray: Annotated[str | None, Query(description="true, false or a depth >= 1")] = None,
) -> Response:
    """The graph's nodes and edges, as LangGraph's server draws them (``nodes``: ``{id,
    type, data}``; ``edges``: ``{source, target}``, plus ``conditional`` and ``data`` (the
    branch's label) for conditional edges)."""
    _check_xray(xray)
    _, graph = _find(graphs, assistant_id)
    return json_response(graph_json(graph))


def _check_xray(xray: str | None) -> None:
    if xray is None or xray in ("true", "True", "false", "False"):
        return
    try:
        depth = int(xray)
    except ValueError:
        depth = 0
    if depth <= 0:
        raise InvalidRequestError(f"xray must be true, false or a depth >= 1, not {xray!r}")


def graph_json(graph: CompiledGraph) -> dict[str, list[dict[str, Any]]]:
    """The drawing of ``graph`` in LangGraph's JSON form."""
    from threadloom.graph import END

    drawn = graph.get_graph()
    nodes: list[dict[str, Any]] = []
    for node in drawn.nodes:
        if node == END:
            nodes.append({"id": node})
        else:
            nodes.append({"id": node, "type": "runnable", "data": {"name": node}})
    edges: list[dict[str, Any]] = []
    for edge in sorted(drawn.edges, key=lambda e: (e.source, e.target)):
        item: dict[str, Any] = {"source": edge.source, "target": edge.target}
        if edge.label is not None:
            item["data"] = edge.label
        if edge.conditional:
            item["conditional"] = True
        edges.append(item)
    return {"nodes": nodes, "edges": edges}


@router.get("/assistants/{assistant_id}/schemas", response_model=GraphSchemasModel,
            summary="Get an assistant's schemas")
def get_assistant_schemas(assistant_id: str, graphs: Graphs, who: Viewer) -> Response:
    """The graph's input, output and state schemas as JSON schema (best effort: a field whose
    type has no JSON schema is shown without one)."""
    name, graph = _find(graphs, assistant_id)
    return json_response({"graph_id": name, **_schemas(graph)})


def _schemas(graph: CompiledGraph) -> dict[str, Any]:
    builder = graph.builder
    context = getattr(builder, "context_schema", None)
    return {
        "input_schema": json_schema(builder.input_schema),
        "output_schema": json_schema(builder.output_schema),
        "state_schema": json_schema(builder.state_schema),
        "config_schema": {},
        "context_schema": json_schema(context) if context is not None else None,
    }


def json_schema(schema: Any) -> dict[str, Any] | None:
    """``schema`` (a TypedDict, dataclass or Pydantic model) as JSON schema, field by field
    when the whole cannot be converted; ``None`` for something that is not a class."""
    from pydantic import TypeAdapter

    if not isinstance(schema, type):
        return None
    try:
        whole: dict[str, Any] = TypeAdapter(schema).json_schema()
        return whole
    except Exception:  # noqa: BLE001 - e.g. typing.TypedDict before 3.12: field by field
        pass
    try:
        hints = typing.get_type_hints(schema, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the keys only
        hints = dict.fromkeys(getattr(schema, "__annotations__", {}), Any)
    properties: dict[str, Any] = {}
    for key, hint in hints.items():
        if typing.get_origin(hint) is Annotated:
            hint = typing.get_args(hint)[0]
        try:
            properties[key] = {"title": key.replace("_", " ").title(),
                               **TypeAdapter(hint).json_schema()}
        except Exception:  # noqa: BLE001 - a type without a JSON schema
            properties[key] = {"title": key.replace("_", " ").title()}
    return {"title": schema.__name__, "type": "object", "properties": properties}
