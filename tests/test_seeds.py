"""The seed documents' examples, run as scripts, print exactly what the seeds show.

Each script in ``examples/`` is its seed's code with ``langgraph`` replaced by ``threadloom``
in the imports. The expected text below was checked by running the same scripts with the
imports switched back to ``langgraph`` (LangGraph 1.2.22): both print the same bytes.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

SEED000 = """\
[NODE] increment | step=0
[NODE] check | step=1
[NODE] increment | step=1
[NODE] check | step=2
[NODE] increment | step=2
[NODE] check | step=3

Final Result: {'step': 3, 'done': True}
"""

SEED002 = """\
{'messages': ['Hello', 'Bot: I received -> Hello']}
{'messages': ['How are you?', 'Bot: I received -> How are you?']}
"""

_SEED003_VALUES = (
    "{'urls': ['https://example.com/a', 'https://example.com/b'], 'results': "
    "['<html><body>Fetched https://example.com/a</body></html>', "
    "'<html><body>Fetched https://example.com/b</body></html>']}"
)
SEED003 = f"""\
{_SEED003_VALUES}
Current node: ()
Current values: {_SEED003_VALUES}
"""

SEED004 = (
    "\n--- Cloud Runtime Execution ---\n\n"
    + "Planner running...\nWorker running...\nController checking...\n" * 3
    + "\n--- Final State ---\n"
    + "{'step': 3, 'result': 'Processed step 3'}\n"
)


def run_example(name: str, **env: str) -> str:
    """Run ``examples/<name>`` with this interpreter and return its stdout."""
    environ = {**os.environ, "PYTHONIOENCODING": "utf-8", **env}
    # The scripts import threadloom from this checkout whether or not it is installed.
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=environ,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    ("script", "env", "expected"),
    [
        pytest.param("seed000_run_id.py", {}, SEED000, id="seed000"),
        pytest.param("seed002_threads.py", {}, SEED002, id="seed002"),
        pytest.param("seed003_durable.py", {}, SEED003, id="seed003"),
        pytest.param(
            "seed004_cloud_runtime.py",
            {"THREADLOOM_SEED004_FAIL_RATE": "0"},
            SEED004,
            id="seed004",
        ),
    ],
)
def test_seed_example_prints_what_the_seed_shows(
    script: str, env: dict[str, str], expected: str
) -> None:
    assert run_example(script, **env) == expected
