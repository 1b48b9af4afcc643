"""The ``threadloom`` command's flags and help texts (argparse)."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import Any

__all__ = ["build_parser"]

_DB_HELP = ("store URL: sqlite:///relative.db, sqlite:////absolute.db or "
            "postgresql://user@host:5432/db (default: $THREADLOOM_DB, then the config file's "
            "db, then sqlite:///./threadloom.db)")
_ADMIN_DB_HELP = ("store URL (default: $THREADLOOM_DB, then sqlite:///./threadloom.db, the "
                  "database `threadloom dev` makes)")
_NS_HELP = "namespace (tenant) to act in (default: %(default)s)"

_MAIN_EPILOG = """\
first steps:
  threadloom dev                       API + worker + seed graphs on ./threadloom.db
  open http://127.0.0.1:8000/docs      the API, with the key printed by `threadloom dev`

in production (Postgres):
  threadloom migrate --db postgresql://user@db:5432/app
  threadloom serve  --config threadloom.toml --db postgresql://... --port 8000   # many
  threadloom worker --config threadloom.toml --db postgresql://... --concurrency 8  # many

Run `threadloom COMMAND --help` for a command's options and examples.
"""

_CONFIG_HELP = """\
threadloom.toml names the graphs (paths are relative to the file):

  db = "postgresql://user@db:5432/app"     # optional
  [graphs]
  my_graph = "my_module:graph"             # a compiled graph, a StateGraph, or a factory
  chat = "./graphs/chat.py:builder"
  [server]                                 # optional
  host = "0.0.0.0"
  port = 8000
  [worker]                                 # optional
  concurrency = 8
  [logs]                                   # optional
  format = "json"                          # or "text"; also level, capture, capture_level,
  max_records = 1000                       # max_message (see the guide's "Logs")

Flags win over the file, and $THREADLOOM_DB over the file's db.
"""


def _command(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_: str,
             description: str, epilog: str = "") -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_, description=textwrap.fill(description, 79), epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func, parser_for_help=parser)
    return parser


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command function imported when it runs (so ``--help`` stays light)."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        result: int = getattr(importlib.import_module(module), name)(args)
        return result

    run.__name__ = name
    return run


_RUNTIME = "threadloom.cli._runtime"
_ADMIN = "threadloom.cli._admin"


def build_parser() -> argparse.ArgumentParser:
    """The ``threadloom`` argument parser with every subcommand."""
    from threadloom import __version__

    parser = argparse.ArgumentParser(
        prog="threadloom",
        description=textwrap.fill("Run durable graph workflows as a service: an HTTP API "
                                  "(LangGraph Platform shape), workers, and admin commands.",
                                  79),
        epilog=_MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"threadloom {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    _runtime_commands(sub)
    _admin_commands(sub)
    return parser


def _runtime_commands(sub: Any) -> None:
    p = _command(sub, "dev", _lazy(_RUNTIME, "dev"), "API + worker in one process (start here)",
                 "Run the HTTP API and a worker in one process, on SQLite by default. Without "
                 "a threadloom.toml it serves the seed graphs (seed_loop, chat, fetch, cloud, "
                 "review). Prints the URL, the docs URL and an API key.",
                 "examples:\n"
                 "  threadloom dev\n"
                 "  threadloom dev --port 8123 --db sqlite:///./demo.db\n"
                 "  threadloom dev --config ./threadloom.toml --db postgresql://postgres@"
                 "127.0.0.1:5432/app\n\n"
                 "The API key: $THREADLOOM_API_KEY if set; otherwise a key saved beside the\n"
                 "SQLite database (<db>.key) and shown at every start (on Postgres, a new key\n"
                 "each start).\n\n" + _CONFIG_HELP)
    _config_flag(p, "default: ./threadloom.toml, or the seed graphs if there is none")
    _listen_flags(p)
    p.add_argument("--db", help=_DB_HELP)
    _redis_flag(p)
    _worker_flags(p)
    _log_flags(p)

    p = _command(sub, "serve", _lazy(_RUNTIME, "serve"), "the HTTP API only (many processes)",
                 "Run the HTTP API only: stateless, so run as many as you like behind a load "
                 "balancer, with workers (`threadloom worker`) executing the runs. Use "
                 "Postgres; on SQLite every process must share one machine.",
                 "examples:\n"
                 "  threadloom serve --config threadloom.toml --db postgresql://user@db/app "
                 "--host 0.0.0.0 --port 8000\n"
                 "  THREADLOOM_API_KEY=$(cat admin.key) threadloom serve --port 8000\n\n"
                 "$THREADLOOM_API_KEY, if set, is registered as an admin key of namespace\n"
                 "'default'. More keys: `threadloom keys create`.\n\n" + _CONFIG_HELP)
    _config_flag(p, "default: ./threadloom.toml")
    _listen_flags(p)
    p.add_argument("--db", help=_DB_HELP)
    _redis_flag(p)
    _log_flags(p)

    p = _command(sub, "worker", _lazy(_RUNTIME, "worker"), "execute queued runs (many processes)",
                 "Claim queued runs and execute them. Run as many workers as you like, on as "
                 "many machines as share the Postgres database. SIGTERM stops claiming, lets "
                 "running runs finish for --shutdown-timeout seconds and hands back the rest.",
                 "examples:\n"
                 "  threadloom worker --config threadloom.toml --db postgresql://user@db/app\n"
                 "  threadloom worker --db postgresql://user@db/app --concurrency 32\n\n"
                 "$THREADLOOM_HOST_ID names the machine (it must differ between machines);\n"
                 "$THREADLOOM_API_KEY, if set, is registered as an admin key.\n\n"
                 + _CONFIG_HELP)
    _config_flag(p, "default: ./threadloom.toml")
    p.add_argument("--db", help=_DB_HELP)
    _redis_flag(p)
    _worker_flags(p)
    _log_flags(p)
    p.add_argument("--metrics-port", type=_port, metavar="N",
                   help="serve Prometheus metrics at http://HOST:N/metrics (needs the "
                        "'metrics' extra; 0: any free port, printed at start)")
    p.add_argument("--metrics-host", metavar="HOST", default="127.0.0.1",
                   help="address the metrics endpoint listens on (default: %(default)s)")


def _log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("text", "json"),
                   help="how the process logs, uvicorn included: text lines, or one JSON "
                        "object per line with run_id, thread_id, graph, node, attempt "
                        "(default: the file's [logs] format, then text)")
    p.add_argument("--log-level", type=str.upper,
                   choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), metavar="LEVEL",
                   help="the lowest level printed: debug, info, warning, error (default: the "
                        "file's [logs] level, then info)")


def _redis_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", metavar="URL",
                   help="optional: carry wake-ups (new work, cancellation, SSE events) between "
                        "processes over Redis pub/sub instead of the database, e.g. "
                        "redis://host:6379/0 (default: $THREADLOOM_REDIS_URL; every process "
                        "of a deployment must use the same; the database stays the truth)")


def _config_flag(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--config", metavar="PATH", help=f"the threadloom.toml to load ({default})")


def _listen_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default: the file's [server] host, "
                                  "then 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=_port, help="port to listen on (default: the file's "
                                              "[server] port, then 8000; 0: any free port)")


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=_positive, metavar="N",
                   help="runs executed at once (default: the file's [worker] concurrency, "
                        "then 8; dev: 32)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long running runs may finish before they are "
                        "handed back to the queue (default: %(default)s)")


def _admin_commands(sub: Any) -> None:
    p = _command(sub, "migrate", _lazy(_ADMIN, "migrate"), "create or upgrade the store's schema",
                 "Create the store's tables, or upgrade them to this version. Safe to run "
                 "again; run it once before starting new versions of serve and worker.",
                 "examples:\n  threadloom migrate --db postgresql://postgres@127.0.0.1:5432/app\n"
                 "  threadloom migrate --db sqlite:///./threadloom.db\n"
                 "  threadloom migrate --rewrite-values --config threadloom.toml")
    p.add_argument("--db", help=_ADMIN_DB_HELP)
    p.add_argument("--rewrite-values", action="store_true",
                   help="also re-encode the values earlier versions stored with pickle in the "
                        "current format, so they read without pickle (unpickles them: run it "
                        "only on a store you trust)")
    p.add_argument("--config", metavar="PATH",
                   help="with --rewrite-values: the threadloom.toml whose [serde] "
                        "allowed_modules and graphs' modules may be stored (default: "
                        "./threadloom.toml if there is one)")

    keys = _command(sub, "keys", _group_help, "API keys: create, ls, revoke",
                    "Manage the API keys that the X-API-Key header carries. Keys are stored "
                    "hashed: a key is shown once, when it is created.",
                    "examples:\n"
                    "  threadloom keys create --namespace default --role operator\n"
                    "  threadloom keys ls\n  threadloom keys revoke k0123456789abcde")
    ksub = keys.add_subparsers(title="commands", dest="keys_command", metavar="COMMAND")
    p = _command(ksub, "create", _lazy(_ADMIN, "keys_create"), "make a key (shown once)",
                 "Make a new key. The key is printed once, as the last word of the output.",
                 "roles: viewer reads; operator also creates, cancels, resumes and retries\n"
                 "runs and updates state; admin also manages keys.\n\n"
                 "examples:\n"
                 "  threadloom keys create --namespace acme --role operator\n"
                 "  KEY=$(threadloom keys create --role admin | tail -n 1)\n"
                 "  threadloom keys create --namespace '*' --role viewer   # every namespace")
    p.add_argument("--namespace", default="default",
                   help="the namespace the key acts in ('*': every namespace; default: "
                        "%(default)s)")
    p.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    p.add_argument("--name", help="a label shown by `keys ls`")
    p.add_argument("--db", help=_ADMIN_DB_HELP)
    p = _command(ksub, "ls", _lazy(_ADMIN, "keys_ls"), "list keys",
                 "List keys: id, namespace, role, when created and last used (never the keys "
                 "themselves).", "examples:\n  threadloom keys ls\n"
                 "  threadloom keys ls --namespace acme --json")
    p.add_argument("--namespace", help="only this namespace's keys (default: all)")
    p.add_argument("--show-revoked", action="store_true", help="also list revoked keys")
    _json_flag(p)
    p.add_argument("--db", help=_ADMIN_DB_HELP)
    p = _command(ksub, "revoke", _lazy(_ADMIN, "keys_revoke"), "revoke a key",
                 "Revoke a key by its id (from `keys ls`); requests with it fail at once.",
                 "example:\n  threadloom keys revoke k0123456789abcde")
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--db", help=_ADMIN_DB_HELP)

    _runs_commands(sub)
    _threads_commands(sub)
    p = _command(sub, "audit", _lazy(_ADMIN, "audit_ls"), "read the audit log",
                 "Print a namespace's audit log, newest first: every change made through the "
                 "API or these commands (who, what, when, the run and thread, the outcome).",
                 "examples:\n  threadloom audit\n  threadloom audit --namespace acme --limit 50"
                 "\n  threadloom audit --json --cursor a00061f2...")
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default: 20)")
    p.add_argument("--cursor", help="continue after the page that printed this cursor")
    _common(p)


def _runs_commands(sub: Any) -> None:
    runs = _command(sub, "runs", _group_help, "runs: ls, show, logs, cancel, resume, retry",
                    "Look at runs and act on them, straight on the store (no server needed).",
                    "examples:\n"
                    "  threadloom runs ls --status failed\n"
                    "  threadloom runs show 1ef0c8f2-...\n"
                    "  threadloom runs retry 1ef0c8f2-...\n"
                    "  threadloom runs resume 1ef0c8f2-... --value true")
    rsub = runs.add_subparsers(title="commands", dest="runs_command", metavar="COMMAND")
    p = _command(rsub, "ls", _lazy(_ADMIN, "runs_ls"), "list runs, newest first",
                 "List runs, newest first.",
                 "statuses: pending, running, interrupted, succeeded, failed, cancelled\n\n"
                 "examples:\n  threadloom runs ls\n  threadloom runs ls --thread demo-1 --json\n"
                 "  threadloom runs ls --graph seed_loop --status failed --limit 50")
    p.add_argument("--status", choices=("pending", "running", "interrupted", "succeeded",
                                        "failed", "cancelled"))
    p.add_argument("--thread", metavar="THREAD_ID", help="only this thread's runs")
    p.add_argument("--graph", help="only this graph's runs")
    _page_flags(p)
    _common(p)
    p = _command(rsub, "show", _lazy(_ADMIN, "runs_show"), "one run and its node executions",
                 "Show a run: status, times, input and output, queue state, and each node "
                 "execution with its attempts and error.",
                 "example:\n  threadloom runs show 1ef0c8f2-... --json")
    p.add_argument("run_id", metavar="RUN_ID")
    _common(p)
    p = _command(rsub, "logs", _lazy("threadloom.cli._logs", "runs_logs"),
                 "the log records kept with a run",
                 "Print the log records kept with a run (engine and node logs at the capture "
                 "level, INFO by default; see [logs] in threadloom.toml), oldest first.",
                 "examples:\n  threadloom runs logs 1ef0c8f2-...\n"
                 "  threadloom runs logs 1ef0c8f2-... --follow      # until the run ends\n"
                 "  threadloom runs logs 1ef0c8f2-... --json        # one JSON object a line")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--thread", metavar="THREAD_ID",
                   help="the run's thread (refused if the run is on another one)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new records until the run is no longer running")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="with --follow, how often to look for new records (default: 1)")
    _common(p)
    p = _command(rsub, "cancel", _lazy(_ADMIN, "runs_cancel"), "cancel a queued or running run",
                 "Cancel a run: a queued run is cancelled at once; a running one stops at its "
                 "next step boundary (a node waiting on a @task stops at once).",
                 "examples:\n  threadloom runs cancel 1ef0c8f2-...\n"
                 "  threadloom runs cancel 1ef0c8f2-... --action rollback   # also delete "
                 "what it wrote")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--action", choices=("interrupt", "rollback"), default="interrupt",
                   help="interrupt keeps what the run did; rollback deletes the run and its "
                        "checkpoints (default: %(default)s)")
    _common(p, json_flag=False)
    p = _command(rsub, "resume", _lazy(_ADMIN, "runs_resume"), "continue an interrupted run",
                 "Continue an interrupted run's thread in a new run (as LangGraph's server "
                 "does: a run with command={'resume': VALUE}); --value answers its "
                 "interrupt(). Without --value the run continues past a breakpoint "
                 "(interrupt_before/after). Prints the new run's id last.",
                 "examples:\n  threadloom runs resume 1ef0c8f2-...            # a breakpoint\n"
                 "  threadloom runs resume 1ef0c8f2-... --value true\n"
                 "  threadloom runs resume 1ef0c8f2-... --value '{\"approved\": false}'")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--value", metavar="JSON", help="the value interrupt() returns (JSON)")
    _common(p, json_flag=False)
    p = _command(rsub, "retry", _lazy(_ADMIN, "runs_retry"), "retry a failed or cancelled run",
                 "Queue a failed or cancelled run again; a worker continues it from its last "
                 "checkpoint (completed steps do not run again).",
                 "example:\n  threadloom runs retry 1ef0c8f2-...")
    p.add_argument("run_id", metavar="RUN_ID")
    _common(p, json_flag=False)


def _threads_commands(sub: Any) -> None:
    threads = _command(sub, "threads", _group_help, "threads: ls, show, export",
                       "Look at threads (a thread is a conversation or job: its runs share "
                       "its state).",
                       "examples:\n  threadloom threads ls\n  threadloom threads show demo-1\n"
                       "  threadloom threads export demo-1 --out demo-1.json")
    tsub = threads.add_subparsers(title="commands", dest="threads_command", metavar="COMMAND")
    p = _command(tsub, "ls", _lazy(_ADMIN, "threads_ls"), "list threads",
                 "List threads, most recently updated first, with the status of each "
                 "(idle, busy, interrupted, error).",
                 "examples:\n  threadloom threads ls\n  threadloom threads ls --limit 100 --json")
    _page_flags(p)
    _common(p)
    p = _command(tsub, "show", _lazy(_ADMIN, "threads_show"), "one thread and its runs",
                 "Show a thread: status, metadata, latest checkpoint and its runs.",
                 "example:\n  threadloom threads show demo-1")
    p.add_argument("thread_id", metavar="THREAD_ID")
    p.add_argument("--limit", type=_positive, default=20, help="runs to list (default: 20)")
    _common(p)
    p = _command(tsub, "export", _lazy(_ADMIN, "threads_export"),
                 "a thread's full history as JSON",
                 "Write a thread's full history (checkpoints, writes, runs, executions) as "
                 "JSON, to stdout or --out FILE; threadloom.checkpoint.retention.import_thread "
                 "reads it back.",
                 "examples:\n  threadloom threads export demo-1 > demo-1.json\n"
                 "  threadloom threads export demo-1 --out demo-1.json")
    p.add_argument("thread_id", metavar="THREAD_ID")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    _common(p, json_flag=False)


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    p.add_argument("--namespace", default="default", help=_NS_HELP)
    if json_flag:
        _json_flag(p)
    p.add_argument("--db", help=_ADMIN_DB_HELP)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _page_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default: 20)")
    p.add_argument("--offset", type=_non_negative, default=0, help="skip this many first")


def _group_help(args: argparse.Namespace) -> int:
    """A command group run without its subcommand: print its usage (exit 2)."""
    args.parser_for_help.print_help()
    return 2


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r} (0-65535)")
    return value


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _non_negative(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
