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
  with ``runs.create_batch`` (stateless, 200 a request; no worker running), then workers
  started; runs/s from the workers' start until every run succeeded.
- latencies (``--latency N`` samples, threadloom targets): the first SSE event of
  ``runs.stream`` after the request; a cancel of a run whose node waits on a slow ``@task``,
  until the run's record is final. ``--reclaim N`` (Postgres): SIGKILL the worker running a
  run (sync durability, inside a 1 s node) and time until the other worker commits the
  run's next step, at the default heartbeat (1 s) and run lease (5 s).

Each wait point also reports the server's and the client's CPU time per run (``/proc``): on
a small machine, they share the cores.

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


def fresh_postgres_schema(base: str, stack: ExitStack) -> str:
    """A new, empty schema in the database at ``base``, dropped when ``stack`` closes (a
    database that keeps every run's tables bloats its catalog and slows the next runs); the
    store URL that uses it (the store's own ``schema`` option: it qualifies every table,
    whatever the search path)."""
    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    stack.callback(drop)  # after the processes using it stop (callbacks run last-in first)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}"


def pg_connect(db: str) -> Any:
    """A psycopg connection to a store URL of :func:`fresh_postgres_schema`, with its schema
    first on the search path."""
    import psycopg

    base, _, schema = db.rpartition("schema=")
    return psycopg.connect(base.rstrip("?&"), options=f"-csearch_path={schema}")


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
        db = fresh_postgres_schema(base_db, stack)
        server = start_threadloom(stack, db, workers=0)
        client = get_client(url=server.url, headers=server.headers)
        sem = asyncio.Semaphore(4)
        batch = 200

        async def create(first: int) -> None:  # stateless runs (each on a new thread)
            async with sem:
                await client.runs.create_batch([
                    {"assistant_id": "one_node", "input": {"n": i}}
                    for i in range(first, min(first + batch, count))])

        t0 = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(0, count, batch)))
        log(f"queued {count} runs in {time.perf_counter() - t0:.1f} s")
        started = time.perf_counter()
        for i in range(workers):
            spawn_worker(server, db, f"drain-{i}")
        done = await _wait_all_succeeded(db, count, timeout=600)
        elapsed = time.perf_counter() - started
        return {"runs": count, "workers": workers, "succeeded": done,
                "seconds": round(elapsed, 2), "runs_per_s": round(done / elapsed, 1)}


# -- latencies --------------------------------------------------------------------------------


def _summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": round(1000 * statistics.median(ordered), 2),
            "max_ms": round(1000 * ordered[-1], 2)} if ordered else {"n": 0}


async def first_event_latency(server: Server, n: int) -> dict[str, Any]:
    """Time from sending ``runs.stream`` (new thread, seed loop) to its first SSE event."""
    from langgraph_sdk import get_client

    client = get_client(url=server.url, headers=server.headers)
    samples: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        first = None
        async for _part in client.runs.stream(str(uuid.uuid4()), "seed_loop", input=SEED_INPUT,
                                              if_not_exists="create", stream_mode="values"):
            if first is None:
                first = time.perf_counter() - started
        if first is not None:
            samples.append(first)
    return _summary(samples)


async def _status_when(client: Any, thread_id: str, run_id: str, done: Any,
                       timeout: float = 30.0) -> str:
    deadline = time.perf_counter() + timeout
    while True:
        status = str((await client.runs.get(thread_id, run_id))["status"])
        if done(status) or time.perf_counter() > deadline:
            return status
        await asyncio.sleep(0.002)


async def cancel_latency(server: Server, n: int) -> dict[str, Any]:
    """Time from a cancel request to the run's final record, for a run whose node waits on
    a 30 s ``@task``."""
    from langgraph_sdk import get_client

    client = get_client(url=server.url, headers=server.headers)
    samples: list[float] = []
    statuses: list[str] = []
    for _ in range(n):
        thread_id = str(uuid.uuid4())
        run = await client.runs.create(thread_id, "tasked_wait", input={"log": []},
                                       if_not_exists="create")
        await _status_when(client, thread_id, run["run_id"], lambda s: s != "pending")
        await asyncio.sleep(0.2)  # well inside the task's wait
        started = time.perf_counter()
        await client.runs.cancel(thread_id, run["run_id"])
        statuses.append(await _status_when(client, thread_id, run["run_id"],
                                           lambda s: s not in ("pending", "running")))
        samples.append(time.perf_counter() - started)
    return {**_summary(samples), "statuses": sorted(set(statuses))}


async def reclaim_latency(base_db: str, n: int) -> dict[str, Any]:
    """SIGKILL the Postgres worker running a run (sync durability, inside its 1 s node);
    time until another worker commits the run's next step (checkpoints' ``created_at``), at
    the runtime's default heartbeat and run lease; workers have distinct host ids."""
    from langgraph_sdk import get_client

    samples: list[float] = []
    lease_left: list[float] = []  # of the dead worker's claim, at the kill
    with ExitStack() as stack:
        db = fresh_postgres_schema(base_db, stack)
        server = start_threadloom(stack, db, workers=0)
        client = get_client(url=server.url, headers=server.headers)
        workers = {}
        for i in range(2):
            proc = spawn_worker(server, db, f"reclaim-{i}", concurrency=4)
            workers[proc.pid] = proc
        await asyncio.sleep(2.0)  # both started and polling
        for i in range(n):
            thread_id = str(uuid.uuid4())
            run = await client.runs.create(thread_id, "slow_steps", input={"log": []},
                                           if_not_exists="create", durability="sync")
            await _status_when(client, thread_id, run["run_id"], lambda s: s != "pending")
            await asyncio.sleep(0.4)  # inside "slow" (1 s), after "first" was committed
            with pg_connect(db) as conn:
                holder, expires, before = conn.execute(
                    "SELECT q.worker, q.claim_expires, (SELECT max(step) FROM checkpoints c"
                    " WHERE c.thread_id = q.thread_id) FROM run_queue q WHERE q.run_id = %s",
                    (run["run_id"],)).fetchone() or (None, None, None)
            pid = int(str(holder).rsplit("-", 2)[1]) if holder else -1
            if pid not in workers:
                log(f"reclaim: run held by {holder!r}, not one of this bench's workers")
                continue
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            workers.pop(pid).wait()
            committed = await _next_step_at(db, thread_id, int(before or 0), killed)
            if committed is not None:
                samples.append(committed - killed)
                lease_left.append(float(expires) - killed)
            proc = spawn_worker(server, db, f"reclaim-r{i}", concurrency=4)
            workers[proc.pid] = proc
            await client.runs.join(thread_id, run["run_id"])
            await asyncio.sleep(1.0)
    return {**_summary(samples), "rerun_node_ms": 1000.0,
            "claim_lease_left_at_kill": _summary(lease_left)}


async def _next_step_at(db: str, thread_id: str, step: int, after: float,
                        timeout: float = 30.0) -> float | None:

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with pg_connect(db) as conn:
            row = conn.execute(
                "SELECT min(created_at) FROM checkpoints WHERE thread_id = %s AND step > %s"
                " AND created_at > %s", (thread_id, step, after)).fetchone()
        if row and row[0] is not None:
            return float(row[0])
        await asyncio.sleep(0.02)
    return None


def spawn_worker(server: Server, db: str, host: str, concurrency: int = 16
                 ) -> subprocess.Popen[bytes]:
    py = str(BIN / "python")
    return server.spawn([py, "-m", "threadloom", "worker", "--config",
                         str(HERE / "threadloom.toml"), "--db", db, "--concurrency",
                         str(concurrency)],
                        {"THREADLOOM_API_KEY": API_KEY, "THREADLOOM_HOST_ID": host}, HERE)


async def _wait_all_succeeded(db: str, count: int, timeout: float) -> int:

    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        with pg_connect(db) as conn:
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
    parser.add_argument("--latency", type=int, default=10,
                        help="samples of the first-SSE-event and cancel latencies per "
                             "threadloom target (0: skip)")
    parser.add_argument("--reclaim", type=int, default=0,
                        help="also SIGKILL a Postgres worker mid-run this many times and time "
                             "the reclaim by the other worker")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "THREADLOOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    counts = [int(c) for c in args.clients.split(",") if c]
    report: dict[str, Any] = {
        "benchmark": "server", "python": platform.python_version(),
        "loadavg_1m": os.getloadavg()[0], "wait": {}, "drain": None, "latency": {},
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
                    db = fresh_postgres_schema(args.postgres_url, stack)
                    server = start_threadloom(stack, db, workers=2)
                else:
                    parser.error(f"unknown target {target!r}")
                for n in counts:
                    log(f"{target}: {n} clients for {args.seconds} s")
                    results.append(asyncio.run(
                        wait_workload(server, n, args.seconds, args.warmup)))
                    log(f"{target}: {results[-1]}")
                if args.latency and target != "langgraph":
                    report["latency"][target] = {
                        "first_sse_event": asyncio.run(first_event_latency(server,
                                                                           args.latency)),
                        "cancel_task_wait": asyncio.run(cancel_latency(server, args.latency)),
                    }
                    log(f"{target} latency: {report['latency'][target]}")
            except Exception as exc:  # noqa: BLE001 - one target failing is reported
                results.append({"error": f"{type(exc).__name__}: {exc}"})
                log(f"{target} failed: {exc}")
        report["wait"][target] = results
    report["ratios"] = _ratios(report["wait"], counts)
    if args.reclaim:
        report["latency"]["reclaim_after_sigkill"] = asyncio.run(
            reclaim_latency(args.postgres_url, args.reclaim))
        log(f"reclaim: {report['latency']['reclaim_after_sigkill']}")
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
