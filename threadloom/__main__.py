"""``python -m threadloom``: the same as the ``threadloom`` command."""

from __future__ import annotations

if __name__ == "__main__":
    from threadloom.cli import main

    raise SystemExit(main())
