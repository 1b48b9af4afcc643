"""Shared setup for the builder's behaviour-parity tests.

``threadloom_only`` marks the tests where threadloom deliberately differs from LangGraph
(each says why); every other test in ``test_parity_*.py`` asserts LangGraph 1.2.22's observed
behaviour and also passes when run against LangGraph itself.

To re-check them against LangGraph: in a LangGraph venv, put first on ``PYTHONPATH`` a
throwaway ``threadloom`` package whose modules re-export LangGraph's names
(``threadloom.graph`` -> ``langgraph.graph``, ``threadloom.types`` -> ``langgraph.types`` plus
``langchain_core.runnables.RunnableConfig``, ``threadloom.errors`` with
``GraphValidationError = ValueError`` and ``ThreadloomError = Exception``, and so on), then run
``pytest -m "not threadloom_only"`` (all pass) and ``pytest -m threadloom_only`` (all fail)
from outside the repository, so that the real package is not imported instead.
"""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "threadloom_only: threadloom deliberately differs from LangGraph here",
    )
