"""Every Python block of the user guide runs as is.

``docs/guide.md`` promises that each example runs unchanged. This test extracts every fenced
``python`` block and runs it as a script of its own, in a fresh interpreter and an empty
working directory, so a block that leans on a name defined in another block (or on a file left
behind by one) fails here. A block that is not meant to run (a server that never exits, say)
is marked by the line ``<!-- guide: no-run (why) -->`` just above its fence, and the reason is
checked to be there. Blocks that need Postgres run against the test server and go through the
``THREADLOOM_REQUIRE_SERVICES`` switch like every other service test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkpoint.conftest import postgres_url  # noqa: F401  (the suite's Postgres probe)

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
NO_RUN = re.compile(r"<!-- guide: no-run \((?P<why>[^)]+)\) -->")
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    run: bool


def guide_blocks(text: str) -> list[Block]:
    """The fenced ``python`` blocks of ``text``, with whether each is meant to run."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            body: list[str] = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            marked = start > 0 and NO_RUN.fullmatch(lines[start - 1].strip()) is not None
            blocks.append(Block(start + 1, "\n".join(body) + "\n", not marked))
        i += 1
    return blocks


BLOCKS = guide_blocks(GUIDE.read_text(encoding="utf-8"))


def test_the_guide_has_runnable_blocks() -> None:
    assert sum(b.run for b in BLOCKS) >= 15


def test_the_extractor_honours_the_no_run_mark() -> None:
    text = "x\n<!-- guide: no-run (serves forever) -->\n```python\nserve()\n```\n" \
           "```python\nprint(1)\n```\n"
    assert guide_blocks(text) == [Block(3, "serve()\n", False), Block(6, "print(1)\n", True)]


def _needs_postgres(code: str) -> bool:
    return "postgresql://" in code


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.run], ids=lambda b: f"line{b.line}")
def test_guide_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if _needs_postgres(block.code):
        url = request.getfixturevalue("postgres_url")
        assert url.startswith("postgresql://")
        if url != POSTGRES_URL:  # another server was chosen for the tests
            block = Block(block.line, block.code.replace(POSTGRES_URL, url), True)
    script = tmp_path / f"guide_line{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )
    assert proc.returncode == 0, (
        f"docs/guide.md block at line {block.line} failed:\n{proc.stdout}\n{proc.stderr}"
    )
