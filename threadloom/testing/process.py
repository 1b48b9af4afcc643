"""Run ``threadloom dev`` / ``serve`` / ``worker`` as real processes, for tests.

Each process listens on a free 127.0.0.1 port (``--port 0``; the port is read back from what
the command prints, so two tests never race for one), gets the environment it is given
(``THREADLOOM_API_KEY``, ``THREADLOOM_HOST_ID``...), and writes its output to files, which
failure messages quote. :meth:`ThreadloomProcess.stop` sends SIGTERM and waits (SIGKILL after
a timeout); :meth:`~ThreadloomProcess.kill` sends SIGKILL at once (a crash).

Example:
    >>> with start_dev("sqlite:////tmp/app.db", env={"THREADLOOM_API_KEY": key}) as dev:
    ...     urllib.request.urlopen(dev.url + "/ok")
    ...     assert dev.stop() == 0
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import threadloom

__all__ = ["ThreadloomProcess", "process_env", "start_dev", "start_serve", "start_worker"]

_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")
_KEY = re.compile(r"API key:\s+(\S+)")


def process_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, plus ``env``, with this threadloom first on
    ``PYTHONPATH`` (so the child runs the same code as the test)."""
    merged = dict(os.environ)
    package_root = str(Path(threadloom.__file__).resolve().parent.parent)
    merged["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, merged.get("PYTHONPATH", "")) if p)
    merged.setdefault("PYTHONUNBUFFERED", "1")
    merged.update(env or {})
    return merged


class ThreadloomProcess:
    """One ``python -m threadloom ...`` subprocess.

    Attributes:
        args: the command's arguments (after ``python -m threadloom``).
        url: ``http://127.0.0.1:PORT`` once ready (``dev`` and ``serve``).
        api_key: the key ``dev`` printed, once ready.
    """

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        self.args = list(args)
        self.cwd = str(cwd) if cwd is not None else None
        self.env = process_env(env)
        self.url: str | None = None
        self.api_key: str | None = self.env.get("THREADLOOM_API_KEY") or None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="threadloom-proc-")
        self._stdout = Path(self._dir.name) / "stdout"
        self._stderr = Path(self._dir.name) / "stderr"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ThreadloomProcess:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        with open(self._stdout, "wb") as out, open(self._stderr, "wb") as err:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "threadloom", *self.args], stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd)
        return self

    @property
    def pid(self) -> int:
        """The process id."""
        return self._require().pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or ``None`` while it runs."""
        return self._require().poll()

    def wait_ready(self, timeout: float = 60.0) -> ThreadloomProcess:
        """Wait until the process serves ``/ok`` (``dev``, ``serve``) or has printed its
        start line (``worker``).

        Raises:
            RuntimeError: it exited first, or the timeout passed (with its output).
        """
        deadline = time.monotonic() + timeout
        serving = self.args[0] in ("dev", "serve")
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise RuntimeError(f"threadloom {self.args[0]} exited with {self.returncode} "
                                   f"before it was ready\n{self.output()}")
            out = self.stdout()
            if serving:
                match = _URL.search(out)
                if match is not None:
                    self.url = f"http://127.0.0.1:{match.group(1)}"
                    key = _KEY.search(out)
                    if key is not None:
                        self.api_key = key.group(1)
                    if self._ok():
                        return self
            elif out.startswith("threadloom worker"):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"threadloom {self.args[0]} was not ready after {timeout}s\n"
                           f"{self.output()}")

    def _ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ok", timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait up to ``timeout`` seconds (SIGKILL after); the exit code."""
        proc = self._require()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit by itself; the exit code.

        Raises:
            subprocess.TimeoutExpired: it still runs after ``timeout`` seconds.
        """
        return self._require().wait(timeout)

    def kill(self) -> int:
        """SIGKILL at once (a crash); the exit code."""
        proc = self._require()
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def close(self) -> None:
        """Stop the process if it runs (SIGKILL after 10 s) and delete its output files."""
        if self._proc is not None and self._proc.poll() is None:
            self.stop(timeout=10.0)
        self._dir.cleanup()

    def __enter__(self) -> ThreadloomProcess:
        if self._proc is None:
            self.start()
        return self.wait_ready()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- output ---------------------------------------------------------------------------

    def stdout(self) -> str:
        """What it printed so far."""
        return self._stdout.read_text(errors="replace") if self._stdout.exists() else ""

    def stderr(self) -> str:
        """What it logged so far."""
        return self._stderr.read_text(errors="replace") if self._stderr.exists() else ""

    def output(self) -> str:
        """Both, labelled, for a failure message."""
        return (f"--- threadloom {' '.join(self.args)}: stdout ---\n{self.stdout()}"
                f"--- stderr ---\n{self.stderr()}")

    def request(self, method: str, path: str, body: Any = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """An HTTP request to the process with its API key; ``(status, JSON body)``."""
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if self.api_key:
            sent["X-API-Key"] = self.api_key
        sent.update(headers or {})
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        return status, json.loads(raw) if raw else None

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("the process was not started")
        return self._proc


def _process(command: str, db: str, config: str | Path | None, env: Mapping[str, str] | None,
             extra: Sequence[str], cwd: str | Path | None, listen: bool) -> ThreadloomProcess:
    args = [command, "--db", db]
    if listen:
        args += ["--host", "127.0.0.1", "--port", "0"]
    if config is not None:
        args += ["--config", str(config)]
    return ThreadloomProcess([*args, *extra], env=env, cwd=cwd)


def start_dev(db: str, *, config: str | Path | None = None,
              env: Mapping[str, str] | None = None, extra: Sequence[str] = (),
              cwd: str | Path | None = None) -> ThreadloomProcess:
    """A ``threadloom dev`` process (not started: use it as a context manager, or call
    ``start().wait_ready()``)."""
    return _process("dev", db, config, env, extra, cwd, listen=True)


def start_serve(db: str, *, config: str | Path | None = None,
                env: Mapping[str, str] | None = None, extra: Sequence[str] = (),
                cwd: str | Path | None = None) -> ThreadloomProcess:
    """A ``threadloom serve`` process (see :func:`start_dev`)."""
    return _process("serve", db, config, env, extra, cwd, listen=True)


def start_worker(db: str, *, config: str | Path | None = None,
                 env: Mapping[str, str] | None = None, extra: Sequence[str] = (),
                 cwd: str | Path | None = None) -> ThreadloomProcess:
    """A ``threadloom worker`` process (see :func:`start_dev`)."""
    return _process("worker", db, config, env, extra, cwd, listen=False)
