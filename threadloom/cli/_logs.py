"""``threadloom runs logs``: the log records kept with a run, read straight from the store."""

from __future__ import annotations

import argparse
import sys
import time

from threadloom.checkpoint.base import RunLog, Store
from threadloom.cli._admin import _get_run, _opened
from threadloom.cli._output import emit_json, iso
from threadloom.errors import RunNotFoundError

__all__ = ["format_log", "runs_logs"]

_PAGE = 500
_RUNNING = ("pending", "running")


def format_log(item: RunLog) -> str:
    """One record as a readable line (and its traceback, indented, below it)."""
    where = ""
    if item.node is not None:
        where = f" [{item.node}" + (f" #{item.attempt}" if item.attempt else "") + "]"
    line = f"{iso(item.at)} {item.level:<7} {item.logger}{where}: {item.message}"
    if item.exc:
        line += "\n" + "\n".join("    " + part for part in item.exc.splitlines())
    return line


def _print_page(store: Store, args: argparse.Namespace, after: int) -> int:
    """Print the records after ``after``; return the last ``seq`` printed."""
    while True:
        page = store.page_run_logs(args.run_id, namespace=args.namespace, after=after,
                                   limit=_PAGE)
        for item in page:
            if args.json:
                emit_json({"seq": item.seq, "at": iso(item.at), "level": item.level,
                           "logger": item.logger, "message": item.message, "node": item.node,
                           "attempt": item.attempt, "step": item.step, "exc": item.exc},
                          indent=None)
            else:
                print(format_log(item))
            after = item.seq
        sys.stdout.flush()
        if len(page) < _PAGE:
            return after


def runs_logs(args: argparse.Namespace) -> int:
    """Print a run's log records, oldest first; ``--follow`` keeps printing new ones until
    the run is no longer pending or running."""
    with _opened(args) as store:
        run = _get_run(store, args.namespace, args.run_id)
        if args.thread is not None and run.thread_id != args.thread:
            raise RunNotFoundError(f"no run {args.run_id!r} on thread {args.thread!r}")
        after = _print_page(store, args, 0)
        if not args.follow:
            if after == 0 and not args.json:
                print("(no log records kept for this run)", file=sys.stderr)
            return 0
        while True:
            record = store.get_run(args.run_id, namespace=args.namespace)
            after = _print_page(store, args, after)
            if record is None or record.status not in _RUNNING:
                # the last records are flushed as the run ends: read once more
                _print_page(store, args, after)
                return 0
            time.sleep(args.interval)
