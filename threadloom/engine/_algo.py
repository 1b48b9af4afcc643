"""The superstep algorithm as pure functions: no I/O, no threads, no clocks.

A run alternates two phases. :func:`plan_tasks` turns the frontier (the nodes triggered by
the previous step, and the ``Send`` packets it produced) into tasks; the runner executes
them; then :func:`apply_writes` merges their writes into the channel values in a
deterministic order (plain nodes by name, then ``Send`` tasks in the order they were sent)
and :func:`advance` computes the next frontier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from threadloom.engine._spec import END, MISSING, BranchSpec, ChannelSpec, GraphSpec, NodeSpec
from threadloom.errors import InvalidRouteError, InvalidUpdateError, ParentCommand
from threadloom.types import Command, Send

__all__ = [
    "Frontier",
    "PlannedTask",
    "TaskResult",
    "advance",
    "apply_writes",
    "extract_update",
    "fresh_values",
    "initial_values",
    "node_input",
    "output_values",
    "plan_tasks",
    "route",
    "settle_deferred",
]

Write = tuple[str, Any]


@dataclass(slots=True)
class Frontier:
    """What is due in the next step.

    Attributes:
        nodes: nodes triggered by edges, in the order they run and apply (by name).
        sends: ``Send`` packets, in the order they were sent.
        barriers: join barrier index -> sources seen so far (kept across steps).
        deferred: ``defer=True`` nodes that were triggered and wait until no other node is
            due (they are not part of :meth:`names`, as LangGraph's ``next`` leaves them out).
    """

    nodes: list[str] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    barriers: dict[int, set[str]] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.nodes or self.sends)

    def names(self) -> tuple[str, ...]:
        """Node names due next, plain nodes first, then Send targets."""
        return (*self.nodes, *(s.node for s in self.sends))


@dataclass(slots=True)
class PlannedTask:
    """One node execution in a step. ``push`` is the Send index, or -1 for a plain node."""

    name: str
    node: NodeSpec
    push: int = -1
    arg: Any = None


@dataclass(slots=True)
class TaskResult:
    """What a finished task produced: state writes and where to go next."""

    task: PlannedTask
    writes: list[Write]
    goto: list[str | Send]


def initial_values(spec: GraphSpec) -> dict[str, Any]:
    """Channel values of a new thread: reducer channels start from their type's empty
    value (``[]`` for a list), plain channels start empty."""
    return {
        name: ch.initial() for name, ch in spec.channels.items() if ch.initial is not None
    }


def plan_tasks(spec: GraphSpec, frontier: Frontier) -> list[PlannedTask]:
    """The tasks of the next step, in application order."""
    nodes = spec.nodes
    tasks = [PlannedTask(name, nodes[name]) for name in frontier.nodes]
    for index, send in enumerate(frontier.sends):
        tasks.append(PlannedTask(send.node, nodes[send.node], index, send.arg))
    return tasks


def node_input(node: NodeSpec, values: Mapping[str, Any]) -> Any:
    """The input a node is called with: its channels, coerced to its input type."""
    reads = node.reads
    if reads is None:
        state = dict(values)
    else:
        state = {k: values[k] for k in reads if k in values}
    coerce = node.coerce
    return state if coerce is None else coerce(state)


def extract_update(
    channels: Mapping[str, ChannelSpec], output: Any, node: str
) -> tuple[list[Write], list[str | Send]]:
    """Turn a node's return value into channel writes and ``goto`` targets.

    A node may return ``None``, a dict, an instance of a dataclass or Pydantic model, a
    :class:`Command`, or a list of Commands. Keys that are not channels are ignored.

    Raises:
        InvalidUpdateError: anything else was returned.
    """
    if output is None:
        return [], []
    if isinstance(output, dict):
        return [(k, v) for k, v in output.items() if k in channels], []
    if isinstance(output, Command):
        return _command_update(channels, output, node)
    if isinstance(output, list | tuple) and output and all(
        isinstance(c, Command) for c in output
    ):
        writes: list[Write] = []
        goto: list[str | Send] = []
        for command in output:
            w, g = _command_update(channels, command, node)
            writes += w
            goto += g
        return writes, goto
    fields = _object_fields(output)
    if fields is not None:
        return [(k, v) for k, v in fields if k in channels], []
    raise InvalidUpdateError(
        f"node {node!r} must return a dict, a Command or None; expected dict, got {output!r}"
    )


def _command_update(
    channels: Mapping[str, ChannelSpec], command: Command[Any], node: str
) -> tuple[list[Write], list[str | Send]]:
    if command.graph == Command.PARENT:
        raise ParentCommand(Command(update=command.update, goto=command.goto))
    if command.graph is not None:
        raise InvalidUpdateError(
            f"node {node!r} returned Command(graph={command.graph!r}), but this graph has no "
            "parent to send it to"
        )
    update = command.update
    writes: list[Write]
    if update is None:
        writes = []
    elif isinstance(update, dict):
        writes = [(k, v) for k, v in update.items() if k in channels]
    elif isinstance(update, list | tuple):
        writes = [(k, v) for k, v in update if k in channels]
    else:
        fields = _object_fields(update)
        if fields is None:
            raise InvalidUpdateError(
                f"node {node!r} returned a Command whose update is not a dict: {update!r}"
            )
        writes = [(k, v) for k, v in fields if k in channels]
    return writes, [g for g in command.goto_targets() if g != END]


def _object_fields(obj: Any) -> list[Write] | None:
    """Fields of a dataclass or Pydantic instance used as an update: every field, except
    those left at a ``None`` default without being set explicitly."""
    model_fields = getattr(type(obj), "model_fields", None)
    if isinstance(model_fields, dict) and hasattr(obj, "model_fields_set"):
        explicitly_set = obj.model_fields_set
        out: list[Write] = []
        for name, info in model_fields.items():
            value = getattr(obj, name)
            if value is None and name not in explicitly_set and info.default is None:
                continue
            out.append((name, value))
        return out
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.default is None:
                continue
            out.append((f.name, value))
        return out
    return None


def route(
    branch: BranchSpec, result: Any, nodes: Mapping[str, NodeSpec], source: str
) -> list[str | Send]:
    """The destinations a path function's result names (``END`` dropped).

    Raises:
        InvalidUpdateError: the result names no known node.
    """
    items: Iterable[Any]
    if isinstance(result, list | tuple | set | frozenset):
        items = result
    else:
        items = (result,)
    out: list[str | Send] = []
    path_map = branch.path_map
    for item in items:
        target: str | Send
        if isinstance(item, Send):
            dest = item.node
            target = item
        else:
            if path_map is not None:
                try:
                    dest = path_map[item]
                except (KeyError, TypeError):
                    raise InvalidRouteError(
                        f"conditional edge from {source!r} returned {item!r}, which is not in "
                        f"its path map {sorted(map(str, path_map))}"
                    ) from None
            else:
                dest = item
            target = dest
        if dest == END:
            continue
        if dest not in nodes:
            raise InvalidRouteError(
                f"conditional edge from {source!r} returned {dest!r}, which is not a valid "
                "destination (a node name, END, or Send)"
            )
        out.append(target)
    return out


def _merge(
    channels: Mapping[str, ChannelSpec], values: dict[str, Any], writes: Sequence[Write]
) -> None:
    """Apply writes to ``values`` in place, without the one-write-per-step check."""
    for key, value in writes:
        reducer = channels[key].reducer
        if reducer is None:
            values[key] = value
        else:
            current = values.get(key, MISSING)
            values[key] = value if current is MISSING else reducer(current, value)


def fresh_values(
    channels: Mapping[str, ChannelSpec], values: Mapping[str, Any], writes: Sequence[Write]
) -> dict[str, Any]:
    """The state as one task sees it after its own writes (what its path functions read)."""
    fresh = dict(values)
    _merge(channels, fresh, writes)
    return fresh


def apply_writes(
    channels: Mapping[str, ChannelSpec], values: dict[str, Any], results: Sequence[TaskResult]
) -> set[str]:
    """Merge the writes of a step's tasks into ``values``, in task order; return the
    channels that were written.

    Raises:
        InvalidUpdateError: a plain channel received more than one write in the step.
    """
    updated: set[str] = set()
    for result in results:
        for key, value in result.writes:
            reducer = channels[key].reducer
            if reducer is None:
                if key in updated:
                    raise InvalidUpdateError(
                        f"At key {key!r}: a plain state key can take only one value per step, "
                        "but several nodes wrote it. Give the key a reducer "
                        "(Annotated[type, reducer]) to combine concurrent writes."
                    )
                values[key] = value
            else:
                current = values.get(key, MISSING)
                values[key] = value if current is MISSING else reducer(current, value)
            updated.add(key)
    return updated


def advance(spec: GraphSpec, frontier: Frontier, results: Sequence[TaskResult]) -> Frontier:
    """The frontier after a step: nodes triggered by static edges, completed join barriers
    and routed destinations; ``Send`` packets in order. Barrier progress carries over, and
    so do deferred nodes (see :func:`settle_deferred`)."""
    nodes = spec.nodes
    triggered: dict[str, None] = {}
    sends: list[Send] = []
    barriers = frontier.barriers
    if barriers:
        for result in results:
            if nodes[result.task.name].defer:
                _consume_barriers(spec, barriers, result.task.name)
    hits: list[tuple[int, str]] = []
    for result in results:
        node = nodes[result.task.name]
        for name in node.static_next:
            triggered[name] = None
        for index in node.barriers:
            hits.append((index, node.name))
        for goto in result.goto:
            if isinstance(goto, Send):
                sends.append(goto)
            else:
                triggered[goto] = None
    # a step's hits on a barrier count as one set (a source that ran several times in the
    # step, through Send, does not start the barrier's next round), as LangGraph's do
    if not hits:
        return settle_deferred(spec, triggered, sends, barriers, frontier.deferred)
    completed: dict[int, None] = {}
    for index, source in hits:
        seen = barriers.setdefault(index, set())
        seen.add(source)
        if seen >= spec.barriers[index].sources:
            completed[index] = None
    for index in completed:
        target = spec.barriers[index].target
        if not nodes[target].defer:
            del barriers[index]
        # a deferred target's barrier stays complete (further hits change nothing) until
        # the target runs, as LangGraph's barrier channels do
        triggered[target] = None
    return settle_deferred(spec, triggered, sends, barriers, frontier.deferred)


def _consume_barriers(spec: GraphSpec, barriers: dict[int, set[str]], target: str) -> None:
    """A deferred node ran: the complete join barriers that were waiting for it reset."""
    for index, barrier in enumerate(spec.barriers):
        if barrier.target == target and barriers.get(index, set()) >= barrier.sources:
            del barriers[index]


def settle_deferred(spec: GraphSpec, triggered: Collection[str], sends: list[Send],
                    barriers: dict[int, set[str]], waiting: Sequence[str] = ()) -> Frontier:
    """The next frontier from the nodes a step (or the input) triggered: ``defer=True``
    nodes join the waiting ones, and run once no other node is due (``Send`` packets do not
    count), as in LangGraph."""
    nodes = spec.nodes
    due = [name for name in triggered if not nodes[name].defer]
    if not waiting and len(due) == len(triggered):  # no deferred node involved
        return Frontier(sorted(due), sends, barriers)
    deferred = dict.fromkeys(waiting)
    deferred.update((name, None) for name in triggered if nodes[name].defer)
    if not due and deferred:
        return Frontier(sorted(deferred), sends, barriers)
    return Frontier(sorted(due), sends, barriers, sorted(deferred))


def output_values(spec: GraphSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """The run's output: the output keys that hold a value, in schema order."""
    return {k: values[k] for k in spec.output_keys if k in values}


def with_recorded(spec: GraphSpec, frontier: Frontier, ids: Mapping[tuple[str, int], str],
                  recorded: Mapping[str, tuple[list[Any], list[Any]]],
                  results: list[TaskResult]) -> list[TaskResult]:
    """A step's results in planned order: ``results`` (the tasks just run) and, for the
    tasks whose writes were ``recorded`` before a replay (by execution id, see ``ids``),
    those writes."""
    if not recorded:
        return results
    by_id = {ids[(r.task.name, r.task.push)]: r for r in results}
    out: list[TaskResult] = []
    for task in plan_tasks(spec, frontier):
        task_id = ids[(task.name, task.push)]
        if task_id in by_id:
            out.append(by_id[task_id])
        elif task_id in recorded:
            writes, goto = recorded[task_id]
            out.append(TaskResult(task, list(writes), list(goto)))
    return out
