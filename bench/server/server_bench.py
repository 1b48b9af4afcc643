"""Benchmark the runtime against LangGraph's own dev server, side by side in one run.

Run it through ``bench/server/run.sh`` (a venv holding langgraph-cli[inmem] / langgraph-api
0.16.7, langgraph-sdk 0.4.14 and threadloom)::

    bench/server/run.sh                                  # wait workload, 8 and 32 clients
    bench/server/run.sh --clients 8 --seconds 10
    bench/server/run.sh --targets threadloom-postgres --drain 10000

Workloads:

- ``wait``: ``runs.wait`` of the seed 000 loop (``increment`` / ``check`` until ``step >= 3``:
  6 node executions) on a new thread per run (``if_not_exists="create"``), from N concurrent
  ``langgraph-sdk`` async clients, for ``--seconds`` after a warm-up. Reports runs/s, p50, p99.
- ``drain`` (``--drain N``, threadloom targets): N background runs of a 1-node graph queued
  with ``runs.create`` (no worker running), then workers started; runs/s from the workers'
  start until every run succeeded.

Targets (each a real server process on 127.0.0.1, started and stopped here):

- ``langgraph``: ``langgraph dev --n-jobs-per-worker 10`` (in-memory runtime).
- ``threadloom``: ``threadloom dev`` on a fresh SQLite file.
- ``threadloom-postgres``: ``threadloom serve`` + 2 ``threadloom worker`` on a fresh Postgres
  schema (``--postgres-url``, default the local test database).

The JSON report goes to stdout, progress to stderr. Ratios are threadloom / LangGraph on
throughput (higher is better) and on p50 latency (lower is better).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
API_KEY = "bench-key-" + "x" * 24
SEED_INPUT = {"step": 0, "done": False}


def log(*parts: Any) -> None:
    print("server_bench:", *parts, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ok(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering /ok")
        try:
            with urllib.request.urlopen(url + "/ok", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}/ok did not answer within {timeout} s")


class Server:
    """Processes of one target; ``url`` is the API's."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""
        self.headers: dict[str, str] = {}
        self.logs: list[Path] = []

    def spawn(self, argv: Sequence[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        out = Path(tempfile.mkstemp(prefix=f"bench-{self.name}-", suffix=".log")[1])
        self.logs.append(out)
        proc = subprocess.Popen(list(argv), cwd=cwd, env={**os.environ, **env},
                                stdout=out.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the target's processes used so far (Linux /proc)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        for proc in self.procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return total

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_langgraph(stack: ExitStack) -> Server:
    server = Server("langgraph")
    stack.callback(server.stop)
    port = free_port()
    proc = server.spawn(
        [str(BIN / "langgraph"), "dev", "--no-browser", "--no-reload", "--port", str(port),
         "--n-jobs-per-worker", "10"],
        {"LANGGRAPH_CLI_NO_ANALYTICS": "1"}, HERE)
    server.url = f"http://127.0.0.1:{port}"
    wait_ok(server.url, proc)
    return server


def start_threadloom(stack: ExitStack, db: str | None, workers: int) -> Server:
    """``threadloom dev`` (``workers == 0``) or ``serve`` + ``workers`` workers."""
    server = Server("threadloom" if db is None else "threadloom-postgres")
    stack.callback(server.stop)
    port = free_port()
    env = {"THREADLOOM_API_KEY": API_KEY}
    config = str(HERE / "threadloom.toml")
    py = str(BIN / "python")
    if db is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-tl-"))
        argv = [py, "-m", "threadloom", "dev", "--config", config, "--port", str(port),
                "--db", f"sqlite:///{tmp}/bench.db"]
        proc = server.spawn(argv, env, HERE)
    else:
        proc = server.spawn([py, "-m", "threadloom", "serve", "--config", config, "--port",
                             str(port), "--db", db], env, HERE)
        for i in range(workers):
            server.spawn([py, "-m", "threadloom", "worker", "--config", config, "--db", db,
                          "--concurrency", "16"], {**env, "THREADLOOM_HOST_ID": f"bench-{i}"},
                         HERE)
    server.url = f"http://127.0.0.1:{port}"
    server.headers = {"X-API-Key": API_KEY}
    wait_ok(server.url, proc)
    return server


def fresh_postgres_schema(base: str) -> str:
    """A new, empty schema in the database at ``base``; the store URL that uses it."""
    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


async def _one_wait(client: Any, latencies: list[float]) -> None:
    started = time.perf_counter()
    out = await client.runs.wait(str(uuid.uuid4()), "seed_loop", input=SEED_INPUT,
                                 if_not_exists="create")
    latencies.append(time.perf_counter() - started)
    if not isinstance(out, dict) or out.get("step") != 3 or out.get("done") is not True:
        raise RuntimeError(f"wrong result from runs.wait: {out!r}")


async def wait_workload(server: Server, clients: int, seconds: float,
                        warmup: float) -> dict[str, Any]:
    from langgraph_sdk import get_client

    client = get_client(url=server.url, headers=server.headers)
    stop_at = 0.0
    latencies: list[float] = []
    errors: list[str] = []

    async def loop(sink: list[float]) -> None:
        while time.perf_counter() < stop_at:
            try:
                await _one_wait(client, sink)
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                errors.append(f"{type(exc).__name__}: {exc}")
                if len(errors) > 20:
                    return

    stop_at = time.perf_counter() + warmup
    await asyncio.gather(*(loop([]) for _ in range(clients)))
    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()
    cpu0, mine0 = server.cpu_seconds(), time.process_time()
    await asyncio.gather(*(loop(latencies) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    cpu, mine = server.cpu_seconds() - cpu0, time.process_time() - mine0
    if not latencies:
        return {"error": errors[:3] or ["no run finished"]}
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "runs": len(latencies),
        "seconds": round(elapsed, 3),
        "runs_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "server_cpu_ms_per_run": round(1000 * cpu / len(latencies), 2),
        "client_cpu_ms_per_run": round(1000 * mine / len(latencies), 2),
        "errors": len(errors),
        **({"first_errors": errors[:3]} if errors else {}),
    }


async def drain_workload(base_db: str, count: int, workers: int) -> dict[str, Any]:
    """Queue ``count`` runs of the 1-node graph with no worker, then time the workers."""
    from langgraph_sdk import get_client

    with ExitStack() as stack:
        db = fresh_postgres_schema(base_db)
        server = start_threadloom(stack, db, workers=0)
        client = get_client(url=server.url, headers=server.headers)
        sem = asyncio.Semaphore(32)

        async def create(i: int) -> None:
            async with sem:
                await client.runs.create(f"drain-{i}", "one_node", input={"n": i},
                                         if_not_exists="create")

        t0 = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(count)))
        log(f"queued {count} runs in {time.perf_counter() - t0:.1f} s")
        started = time.perf_counter()
        py = str(BIN / "python")
        for i in range(workers):
            server.spawn([py, "-m", "threadloom", "worker", "--config",
                          str(HERE / "threadloom.toml"), "--db", db, "--concurrency", "16"],
                         {"THREADLOOM_API_KEY": API_KEY, "THREADLOOM_HOST_ID": f"drain-{i}"},
                         HERE)
        done = await _wait_all_succeeded(db, count, timeout=600)
        elapsed = time.perf_counter() - started
        return {"runs": count, "workers": workers, "succeeded": done,
                "seconds": round(elapsed, 2), "runs_per_s": round(done / elapsed, 1)}


async def _wait_all_succeeded(db: str, count: int, timeout: float) -> int:
    import psycopg

    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()
        done = int(row[0]) if row else 0
        if done >= count:
            break
        await asyncio.sleep(0.05)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="langgraph,threadloom",
                        help="comma list of langgraph, threadloom, threadloom-postgres")
    parser.add_argument("--clients", default="8,32", help="comma list of client counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per point")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drain", type=int, default=0,
                        help="also queue this many runs and time 2 Postgres workers draining")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "THREADLOOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    counts = [int(c) for c in args.clients.split(",") if c]
    report: dict[str, Any] = {
        "benchmark": "server", "python": platform.python_version(),
        "loadavg_1m": os.getloadavg()[0], "wait": {}, "drain": None,
    }
    for target in targets:
        results = []
        with ExitStack() as stack:
            log(f"starting {target}")
            try:
                if target == "langgraph":
                    server = start_langgraph(stack)
                elif target == "threadloom":
                    server = start_threadloom(stack, None, 0)
                elif target == "threadloom-postgres":
                    server = start_threadloom(stack, fresh_postgres_schema(args.postgres_url),
                                              workers=2)
                else:
                    parser.error(f"unknown target {target!r}")
                for n in counts:
                    log(f"{target}: {n} clients for {args.seconds} s")
                    results.append(asyncio.run(
                        wait_workload(server, n, args.seconds, args.warmup)))
                    log(f"{target}: {results[-1]}")
            except Exception as exc:  # noqa: BLE001 - one target failing is reported
                results.append({"error": f"{type(exc).__name__}: {exc}"})
                log(f"{target} failed: {exc}")
        report["wait"][target] = results
    report["ratios"] = _ratios(report["wait"], counts)
    if args.drain:
        report["drain"] = asyncio.run(drain_workload(args.postgres_url, args.drain, 2))
        log(f"drain: {report['drain']}")
    print(json.dumps(report, indent=2))
    return 0


def _ratios(wait: dict[str, list[dict[str, Any]]], counts: list[int]) -> dict[str, Any]:
    ref = wait.get("langgraph")
    out: dict[str, Any] = {}
    if not ref:
        return out
    for target, rows in wait.items():
        if target == "langgraph":
            continue
        for n, mine, theirs in zip(counts, rows, ref, strict=False):
            if "runs_per_s" in mine and "runs_per_s" in theirs:
                out[f"{target}@{n}"] = {
                    "throughput_x": round(mine["runs_per_s"] / theirs["runs_per_s"], 2),
                    "p50_ratio": round(mine["p50_ms"] / theirs["p50_ms"], 3),
                }
    return out


if __name__ == "__main__":
    sys.exit(main())
