"""``[serde] allowed_modules`` in threadloom.toml: read, checked, and registered for every
serializer of the process when the graphs are loaded (with each graph's own module)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from threadloom.checkpoint import open_store
from threadloom.checkpoint.serde import JsonPlusSerializer
from threadloom.errors import InvalidConfigError, TypeNotAllowedError
from threadloom.worker.registry import load_graphs, read_config

GRAPH = """
from dataclasses import dataclass
from typing import Any, TypedDict
from threadloom.graph import StateGraph, START, END

@dataclass
class Local:
    n: int

class S(TypedDict, total=False):
    value: Any

def make(value_factory):
    b = StateGraph(S)
    b.add_node("n", lambda s: {"value": value_factory()})
    b.add_edge(START, "n")
    b.add_edge("n", END)
    return b.compile()

def _models():
    from cfg_models import Model
    return Model(2)

local = make(lambda: Local(1))
listed = make(_models)
unlisted = make(lambda: __import__("cfg_other").Other(3))
"""


def _write(tmp_path: Path, serde: str) -> Path:
    (tmp_path / "cfg_graphs.py").write_text(textwrap.dedent(GRAPH))
    for name, cls in (("cfg_models", "Model"), ("cfg_other", "Other")):
        (tmp_path / f"{name}.py").write_text(
            f"from dataclasses import dataclass\n\n@dataclass\nclass {cls}:\n    n: int\n")
    path = tmp_path / "threadloom.toml"
    path.write_text(f'{serde}\n[graphs]\nlocal = "./cfg_graphs.py:local"\n'
                    'listed = "./cfg_graphs.py:listed"\nunlisted = "./cfg_graphs.py:unlisted"\n')
    return path


@pytest.fixture
def cleanup_modules():
    yield
    for name in list(sys.modules):
        if name.startswith(("cfg_", "threadloom_graph_cfg_graphs")):
            del sys.modules[name]


def test_allowed_modules_and_the_graphs_modules_are_registered(tmp_path: Path, cleanup_modules):
    path = _write(tmp_path, '[serde]\nallowed_modules = ["cfg_models"]\n')
    assert read_config(path).allowed_modules == ("cfg_models",)
    store = open_store(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        graphs = load_graphs(read_config(path), store)
        assert JsonPlusSerializer().allows("cfg_models")
        config = {"configurable": {"thread_id": "a"}}
        assert graphs["local"].invoke({}, config)["value"].n == 1  # the graph's own module
        config = {"configurable": {"thread_id": "b"}}
        assert graphs["listed"].invoke({}, config)["value"].n == 2
        with pytest.raises(TypeNotAllowedError, match="cfg_other"):
            graphs["unlisted"].invoke({}, {"configurable": {"thread_id": "c"}})
    finally:
        store.close()


@pytest.mark.parametrize("serde", [
    '[serde]\nallowed_modules = "cfg_models"\n',
    '[serde]\nallowed_modules = ["not a module"]\n',
    '[serde]\nallowed = ["cfg_models"]\n',
    'serde = 1\n',
])
def test_a_wrong_serde_table_is_an_error_naming_the_file(tmp_path: Path, serde: str) -> None:
    path = _write(tmp_path, serde)
    with pytest.raises(InvalidConfigError, match=r"\[serde\]|serde must be a table"):
        read_config(path)
