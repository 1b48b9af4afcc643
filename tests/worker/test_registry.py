"""The graph registry: threadloom.toml -> graphs bound to the runtime's store."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from threadloom.checkpoint import open_store
from threadloom.checkpoint.memory import InMemorySaver
from threadloom.errors import InvalidConfigError
from threadloom.types import Command
from threadloom.worker.registry import SEED_GRAPHS, load_graphs, read_config

GRAPH_MODULE = """
from typing import TypedDict
from threadloom.checkpoint.memory import InMemorySaver
from threadloom.graph import StateGraph, START, END

class S(TypedDict, total=False):
    n: int

def make_builder():
    b = StateGraph(S)
    b.add_node("inc", lambda s: {"n": s.get("n", 0) + 1})
    b.add_node("inc2", lambda s: {"n": s["n"] + 10})
    b.add_edge(START, "inc")
    b.add_edge("inc", "inc2")
    b.add_edge("inc2", END)
    return b

builder = make_builder()
compiled = make_builder().compile(checkpointer=InMemorySaver(), interrupt_before=["inc2"],
                                  durability="sync", name="original")
configured = make_builder().compile().with_config({"configurable": {"who": "me"}})

def factory():
    return make_builder().compile()

def builder_factory():
    return make_builder()

def needs_args(x):
    return make_builder()

def broken_factory():
    raise RuntimeError("no model configured")

def returns_number():
    return 42

not_a_graph = {"nodes": []}
"""


@pytest.fixture
def store():
    s = open_store("memory://")
    yield s
    s.close()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a graph module, a graph file in a subfolder, and a config writer."""
    name = f"graphs_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(GRAPH_MODULE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file_graph.py").write_text(GRAPH_MODULE)
    monkeypatch.setattr(sys, "path", list(sys.path))

    def write(body: str) -> Path:
        path = tmp_path / "threadloom.toml"
        path.write_text(textwrap.dedent(body).replace("MODULE", name))
        return path

    write.module = name  # type: ignore[attr-defined]
    yield write
    for key in [k for k in sys.modules if k == name or k.startswith("threadloom_graph_")]:
        del sys.modules[key]


def test_module_attr_and_file_attr_are_bound_to_the_store_under_their_names(project, store):
    path = project("""
        [graphs]
        plain = "MODULE:builder"
        from_file = "./sub/file_graph.py:builder"
    """)
    graphs = load_graphs(path, store)
    assert sorted(graphs) == ["from_file", "plain"]
    for name, graph in graphs.items():
        assert graph.checkpointer is store
        assert graph.name == name
        assert graph.invoke({"n": 1}, {"thread_id": f"t-{name}"}) == {"n": 12}
    runs = store.list_runs(limit=10)
    assert sorted(r.graph for r in runs) == ["from_file", "plain"]


def test_a_compiled_graph_is_rebound_keeping_what_it_was_compiled_with(project, store):
    path = project("""
        [graphs]
        mine = "MODULE:compiled"
        configured = "MODULE:configured"
    """)
    graphs = load_graphs(path, store, lease_ttl=3.0)
    graph = graphs["mine"]
    assert graph.checkpointer is store and not isinstance(graph.checkpointer, InMemorySaver)
    assert graph.name == "mine"
    assert graph.interrupt_before == ("inc2",)
    assert graph.durability == "sync"
    assert graph.lease_ttl == 3.0
    out = graph.invoke({"n": 0}, {"thread_id": "t"})
    assert out["n"] == 1 and graph.get_state({"thread_id": "t"}).next == ("inc2",)
    assert graph.invoke(None, {"thread_id": "t"}) == {"n": 11}
    assert graphs["configured"].config == {"configurable": {"who": "me"}}


def test_factories_of_a_compiled_graph_or_a_builder(project, store):
    path = project("""
        [graphs]
        f1 = "MODULE:factory"
        f2 = "MODULE:builder_factory"
    """)
    graphs = load_graphs(path, store)
    assert graphs["f1"].checkpointer is store and graphs["f1"].name == "f1"
    assert graphs["f2"].invoke({"n": 5}, {"thread_id": "x"}) == {"n": 16}


def test_an_entrypoint_is_a_graph(tmp_path, store, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "flow.py").write_text(textwrap.dedent("""
        from threadloom.func import entrypoint, task

        @task
        def double(x):
            return 2 * x

        @entrypoint()
        def workflow(x):
            return double(x).result() + 1
    """))
    (tmp_path / "threadloom.toml").write_text('[graphs]\nflow = "./flow.py:workflow"\n')
    graphs = load_graphs(tmp_path / "threadloom.toml", store)
    assert graphs["flow"].invoke(20, {"thread_id": "e"}) == 41
    assert graphs["flow"].checkpointer is store


@pytest.mark.parametrize(("body", "expected"), [
    ('[graphs]\ng = "no_such_module_xyz:graph"', "graph 'g': no module named 'no_such_module_xyz'"),
    ('[graphs]\ng = "MODULE:nope"', "graph 'g': MODULE has no attribute 'nope'"),
    ('[graphs]\ng = "MODULE:not_a_graph"', "a dict is not a graph"),
    ('[graphs]\ng = "MODULE:returns_number"', "the factory returned a int"),
    ('[graphs]\ng = "MODULE:needs_args"', "the factory function needs_args() must take no"),
    ('[graphs]\ng = "MODULE:broken_factory"',
     "the factory failed: RuntimeError: no model configured (at "),
    ('[graphs]\ng = "./missing.py:graph"', "missing.py not found"),
    ('[graphs]\ng = "MODULE"', "expected \"module:attr\" or \"./file.py:attr\""),
    ('[graphs]\ng = 3', "expected \"module:attr\""),
    ('[graphs]\n', "no graphs; add a [graphs] table"),
    ('[graphs\ng = "x:y"', "not valid TOML"),
    ('db = "sqlite:///x.db"\n[graphs]\ng = "MODULE:builder"\n[server]\nprot = 1',
     "unknown key 'prot' in [server]"),
    ('[graphs]\ng = "MODULE:builder"\n[worker]\nconcurrency = "8"',
     "[worker] concurrency must be an integer"),
    ('title = "x"\n[graphs]\ng = "MODULE:builder"', "unknown key 'title'"),
])
def test_config_mistakes_are_named_with_the_file_and_the_graph(project, store, body, expected):
    path = project(body)
    with pytest.raises(InvalidConfigError) as info:
        load_graphs(path, store)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected.replace("MODULE", project.module) in message


def test_an_import_error_inside_the_module_names_the_cause_and_the_line(tmp_path, store,
                                                                          monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "bad_dep_graph.py").write_text("import no_such_dependency_q\n")
    (tmp_path / "syntax_graph.py").write_text("def f(:\n")
    (tmp_path / "threadloom.toml").write_text('[graphs]\ng = "bad_dep_graph:graph"\n')
    with pytest.raises(InvalidConfigError, match=r"importing bad_dep_graph failed: "
                       r"ModuleNotFoundError: No module named 'no_such_dependency_q' "
                       r"\(at .*bad_dep_graph.py:1\)"):
        load_graphs(tmp_path / "threadloom.toml", store)
    (tmp_path / "threadloom.toml").write_text('[graphs]\ng = "./syntax_graph.py:graph"\n')
    with pytest.raises(InvalidConfigError, match=r"importing .*syntax_graph.py failed: "
                       r"SyntaxError"):
        load_graphs(tmp_path / "threadloom.toml", store)


def test_a_missing_config_file_is_named(tmp_path, store):
    with pytest.raises(InvalidConfigError, match=r"threadloom.toml: config file not found"):
        load_graphs(tmp_path / "threadloom.toml", store)


def test_config_values_and_relative_sqlite_paths(project):
    path = project("""
        db = "sqlite:///./data/app.db"
        [graphs]
        g = "MODULE:builder"
        [server]
        host = "0.0.0.0"
        port = 9000
        [worker]
        concurrency = 3
    """)
    config = read_config(path)
    assert config.db == f"sqlite:///{path.parent}/data/app.db"
    assert (config.host, config.port, config.concurrency) == ("0.0.0.0", 9000, 3)
    assert config.graphs == {"g": f"{project.module}:builder"}
    for url in ("sqlite:////abs/x.db", "postgresql://h/db", "sqlite://:memory:"):
        path.write_text(f'db = "{url}"\n[graphs]\ng = "x:y"\n')
        assert read_config(path).db == url


def test_without_a_config_the_seed_graphs_run(store):
    graphs = load_graphs(None, store)
    assert sorted(graphs) == sorted(SEED_GRAPHS) == ["chat", "cloud", "fetch", "review",
                                                     "seed_loop"]
    assert graphs["seed_loop"].invoke({"step": 0}, {"thread_id": "l"}) == {"step": 3,
                                                                            "done": True}
    chat = graphs["chat"]
    chat.invoke({"messages": ["Hello"]}, {"thread_id": "c"})
    assert chat.invoke({"messages": ["Again"]}, {"thread_id": "c"})["messages"] == [
        "Hello", "Bot: I received -> Hello", "Again", "Bot: I received -> Again"]
    assert graphs["fetch"].invoke({"urls": ["https://a", "https://b"]},
                                  {"thread_id": "f"})["results"] == [
        "<html><body>Fetched https://a</body></html>",
        "<html><body>Fetched https://b</body></html>"]
    paused = graphs["review"].invoke({"topic": "refund"}, {"thread_id": "r"})
    assert paused["__interrupt__"][0].value["question"] == "Approve this reply?"
    assert graphs["review"].invoke(Command(resume=True), {"thread_id": "r"})["published"]


def test_the_cloud_seed_retries_its_transient_failures(store, monkeypatch):
    monkeypatch.setenv("THREADLOOM_SEED004_FAIL_RATE", "0.6")
    import threadloom.examples.cloud as cloud

    monkeypatch.setattr(cloud, "WORK_SECONDS", 0.0)
    failures = iter([True, True, False] * 10)
    monkeypatch.setattr(cloud.random, "random", lambda: 0.0 if next(failures) else 0.99)
    graph = load_graphs(None, store)["cloud"]
    assert graph.invoke({"step": 0}, {"thread_id": "c", "run_id": "cloud-1"}) == {
        "step": 3, "result": "Processed step 3"}
    retried = [e for e in store.list_executions(run_id="cloud-1") if e.node == "worker"]
    assert [e.attempt for e in retried] == [3, 3, 3]
