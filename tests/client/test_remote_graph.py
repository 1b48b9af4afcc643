"""``RemoteGraph``: one script, run once against local compiled graphs and once against the
same graphs served by a real server, gives the same results: code moves from local to
remote by changing the line that makes the graph."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from graphs import compiled
from harness import API_KEY, Server

from threadloom.checkpoint import open_store
from threadloom.client import Client, NotFoundError, RemoteGraph, RemoteRunError
from threadloom.errors import InvalidConfigError
from threadloom.types import Command, Interrupt

LOOP_IN = {"step": 0, "done": False}


def failure(exc: Exception) -> str:
    """A failed run's exception class: raised as is locally, named by RemoteRunError."""
    return exc.error if isinstance(exc, RemoteRunError) else type(exc).__name__


def script(make: Callable[[str], Any]) -> list[Any]:
    """What a user's program does with its graphs; ``make(name)`` gives a graph."""
    loop, chat, review = make("seed_loop"), make("seed_chat"), make("review")
    tag = uuid.uuid4().hex[:8]

    def config(name: str) -> Any:
        return {"configurable": {"thread_id": f"{name}-{tag}"}}

    out: list[Any] = [loop.invoke(LOOP_IN, config("a"))]
    out.append(list(loop.stream(LOOP_IN, config("b"))))
    out.append(list(loop.stream(LOOP_IN, config("c"), stream_mode=["values", "updates"])))
    out.append(list(loop.stream(LOOP_IN, config("c2"), stream_mode="values")))
    state = loop.get_state(config("a"))
    out.append((state.values, state.next, state.metadata["source"], state.metadata["step"],
                set(state.config["configurable"]), state.parent_config is not None))
    out.append([s.values for s in loop.get_state_history(config("a"))])
    out.append([s.metadata["step"] for s in loop.get_state_history(config("a"), limit=2)])

    out.append(chat.invoke({"messages": ["Hello"]}, config("chat")))
    out.append(chat.invoke({"messages": ["How are you?"]}, config("chat")))

    run_id = f"review-{tag}"
    paused = review.invoke({"draft": "x", "approved": False},
                           {**config("review"), "run_id": run_id})
    asked = paused.pop("__interrupt__")
    out.append((paused, [type(i).__name__ for i in asked], [i.value for i in asked]))
    pending = review.get_state(config("review"))
    out.append((pending.next, [t.name for t in pending.tasks],
                [i.value for i in pending.interrupts],
                [i.value for t in pending.tasks for i in t.interrupts]))
    updates = list(review.stream({"draft": "y", "approved": False}, config("review2")))
    out.append([{k: [i.value for i in v] if k == "__interrupt__" else v
                 for k, v in chunk.items()} for chunk in updates])
    out.append(review.invoke(Command(resume="no"), config("review2")))
    out.append(review.resume(run_id, "yes"))
    out.append(review.get_state(config("review")).values)

    written = loop.update_state(config("edit"), {"step": 1, "done": False}, as_node="check")
    out.append(sorted(written["configurable"]))
    edited = loop.get_state(config("edit"))
    out.append((edited.values, edited.next))
    out.append(loop.invoke(None, config("edit")))
    at = loop.get_state(written)
    out.append((at.values, at.next))

    empty = loop.get_state(config("nobody"))
    out.append((empty.values, empty.next, empty.config == config("nobody"), empty.metadata))
    try:
        loop.invoke({"step": "one", "done": False}, config("bad"))
    except Exception as exc:  # noqa: BLE001 - the script records what failed
        out.append(failure(exc))
    return out


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    store = open_store(f"sqlite:///{tmp_path / 'local.db'}")
    graphs = compiled(store)
    yield graphs.__getitem__
    store.close()


@pytest.fixture
def remote(server: Server) -> Iterator[Callable[[str], Any]]:
    made: list[RemoteGraph] = []

    def make(name: str) -> RemoteGraph:
        made.append(RemoteGraph(name, url=server.url, api_key=API_KEY))
        return made[-1]

    yield make
    for graph in made:
        graph.close()


def test_the_same_script_gives_the_same_results_locally_and_remotely(
        local: Callable[[str], Any], remote: Callable[[str], Any]) -> None:
    here = script(local)
    there = script(remote)
    assert len(here) == len(there)
    for number, (mine, theirs) in enumerate(zip(here, there, strict=True)):
        assert mine == theirs, f"result {number} differs"


async def ascript(make: Callable[[str], Any]) -> list[Any]:
    """The async methods a compiled graph has: ``ainvoke`` and ``astream``."""
    loop, review = make("seed_loop"), make("review")
    tag = uuid.uuid4().hex[:8]
    out: list[Any] = [await loop.ainvoke(LOOP_IN, {"configurable": {"thread_id": f"a-{tag}"}})]
    out.append([c async for c in loop.astream(LOOP_IN, {"thread_id": f"b-{tag}"})])
    out.append([c async for c in loop.astream(LOOP_IN, {"thread_id": f"c-{tag}"},
                                              stream_mode=["updates", "values"])])
    out.append(await loop.ainvoke(LOOP_IN, {"thread_id": f"d-{tag}"}, stream_mode="updates"))
    paused = await review.ainvoke({"draft": "z", "approved": False},
                                  {"thread_id": f"r-{tag}"})
    out.append([i.value for i in paused.pop("__interrupt__")])
    out.append(await review.ainvoke(Command(resume="yes"), {"thread_id": f"r-{tag}"}))
    try:
        await loop.ainvoke({"step": "one", "done": False}, {"thread_id": f"bad-{tag}"})
    except Exception as exc:  # noqa: BLE001
        out.append(failure(exc))
    return out


async def test_the_async_methods_give_the_same_results(
        local: Callable[[str], Any], server: Server) -> None:
    async with RemoteGraph("seed_loop", url=server.url, api_key=API_KEY) as loop, \
            RemoteGraph("review", url=server.url, api_key=API_KEY) as review:
        remote = {"seed_loop": loop, "review": review}
        assert await ascript(local) == await ascript(remote.__getitem__)


async def test_the_async_state_methods_match_the_sync_ones(server: Server) -> None:
    config = {"configurable": {"thread_id": f"s-{uuid.uuid4().hex[:8]}"}}
    async with RemoteGraph("review", url=server.url, api_key=API_KEY) as graph:
        assert (await graph.aget_state(config)).values == {}
        written = await graph.aupdate_state(config, {"draft": "d", "approved": False},
                                            as_node="write")
        assert (await graph.aget_state(written)) == graph.get_state(written)
        paused = await graph.ainvoke(None, {**config, "run_id": "again-" + config[
            "configurable"]["thread_id"]})
        assert isinstance(paused["__interrupt__"][0], Interrupt)
        done = await graph.aresume("again-" + config["configurable"]["thread_id"], "yes")
        assert done == {"draft": "d", "approved": True}
        assert graph.get_state(config).values == done


def _paused_review(server: Server) -> tuple[str, str]:
    """A run of ``review`` that another client started and that waits for a human."""
    thread_id = f"t-{uuid.uuid4().hex[:8]}"
    with Client(server.url, api_key=API_KEY) as client:
        run = client.runs.create(thread_id, "review", input={"draft": "q", "approved": False},
                                 if_not_exists="create")
        client.runs.join(thread_id, run["run_id"])
    return thread_id, run["run_id"]


def test_resume_finds_the_thread_from_the_config_and_answers_a_finished_run(
        server: Server) -> None:
    thread_id, run_id = _paused_review(server)
    with RemoteGraph("review", url=server.url, api_key=API_KEY) as graph:
        config = {"configurable": {"thread_id": thread_id}}
        done = graph.resume(run_id, "yes", config=config)
        assert done == {"draft": "draft of q", "approved": True}
        with pytest.raises(NotFoundError):
            graph.resume("no-such-run", "yes", config=config)


async def test_resume_by_run_id_alone_asks_the_server_for_the_thread(server: Server) -> None:
    # the run was started elsewhere: only its id is known, as resume(run_id) promises
    _, run_id = _paused_review(server)
    _, other_id = _paused_review(server)
    with RemoteGraph("review", url=server.url, api_key=API_KEY) as graph:
        assert graph.resume(run_id, "yes") == {"draft": "draft of q", "approved": True}
        with pytest.raises(NotFoundError):
            graph.resume(f"no-such-run-{uuid.uuid4().hex[:6]}", "yes")
    async with RemoteGraph("review", url=server.url, api_key=API_KEY) as graph:
        assert await graph.aresume(other_id, "no") == {"draft": "draft of q",
                                                       "approved": False}


def test_remote_graph_checks_its_arguments(server: Server) -> None:
    with RemoteGraph("seed_loop", url=server.url, api_key=API_KEY) as graph:
        with pytest.raises(TypeError, match="unexpected keyword"):
            graph.invoke(LOOP_IN, {"thread_id": "x"}, bogus=1)
        with pytest.raises(ValueError, match="unknown stream mode"):
            list(graph.stream(LOOP_IN, stream_mode="sideways"))
        with pytest.raises(InvalidConfigError, match="namespace"):
            graph.invoke(LOOP_IN, {"thread_id": "x", "namespace": "other"})
        with pytest.raises(InvalidConfigError, match="thread_id"):
            graph.get_state({})
        assert graph.invoke(LOOP_IN) == {"step": 3, "done": True}  # stateless
        assert repr(graph) == "RemoteGraph('seed_loop')"
