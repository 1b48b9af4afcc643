"""The ``threadloom`` command: ``dev``, ``serve``, ``worker``, ``migrate``, ``keys``, ``runs``
and ``threads``.

Thin by design: it parses flags and calls the factories the runtime is made of
(:func:`threadloom.checkpoint.open_store`, :func:`threadloom.worker.registry.load_graphs`,
:func:`threadloom.server.create_app`, :class:`threadloom.worker.Worker`). Importing it costs
nothing beyond the core: the server's dependencies load only when a command needs them.

Exit codes: 0 done, 1 failed (the message says why; no traceback for an expected error),
2 wrong usage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from threadloom.errors import ThreadloomError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``threadloom`` command with ``argv`` (default: ``sys.argv[1:]``); return the
    exit code."""
    from threadloom.cli._parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.func(args)
    except ThreadloomError as exc:
        _fail(str(exc.args[0]) if exc.args else exc.code)
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except BrokenPipeError:  # `threadloom runs ls | head`
        return 0
    except OSError as exc:
        _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return 1
    except ImportError as exc:
        _fail(f"{exc} (is the extra installed? pip install 'threadloom[server,postgres]')")
        return 1
    return code


def _fail(message: str) -> None:
    print(f"threadloom: error: {message}", file=sys.stderr, flush=True)
