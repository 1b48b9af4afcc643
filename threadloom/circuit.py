"""Circuit breakers: stop calling a dependency that keeps failing, and try it again later.

A :class:`CircuitBreaker` is attached to a node (``add_node(..., circuit=...)``) or a task
(``@task(circuit=...)``). Every breaker with the same ``key`` shares one state in the process,
so two nodes calling the same payment API can share a breaker and trip it together.

The states::

    closed ──(failure_threshold consecutive failures)──> open
    open ──(reset_timeout elapsed; one caller is let through as the probe)──> half-open
    half-open ──(the probe succeeds)──> closed
    half-open ──(the probe fails)──> open (the timeout starts again)

While the circuit is open (and, half-open, for everyone but the probe) calls fail at once
with :class:`~threadloom.errors.CircuitOpenError`, without running. The default retry
policy does not retry that error (retrying an open circuit only burns attempts); a
``RetryPolicy`` whose ``retry_on`` names ``CircuitOpenError`` (or a predicate that accepts
it) does, and a retry that lands after ``reset_timeout`` becomes the probe.

A failure is an ``Exception`` raised by the call (after a node's timeout, a
``NodeTimeoutError``); an interrupt or a cancellation is neither a failure nor a success.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from threadloom.errors import CircuitOpenError, InvalidConfigError

__all__ = ["CircuitBreaker", "CircuitState"]

CircuitState = Literal["closed", "open", "half_open"]
"""Where a circuit is: calls run (``closed``), fail fast (``open``), or one probe runs
(``half_open``)."""

Clock = Callable[[], float]


class _Shared:
    """The state of one key, shared by every breaker with that key."""

    __slots__ = ("lock", "threshold", "timeout", "clock", "failures", "opened_at", "probing")

    def __init__(self, threshold: int, timeout: float, clock: Clock) -> None:
        self.lock = threading.Lock()
        self.threshold = threshold
        self.timeout = timeout
        self.clock = clock
        self.failures = 0  # consecutive failures while closed
        self.opened_at: float | None = None  # None: closed
        self.probing = False  # a probe call is running (half-open)


_registry: dict[str, _Shared] = {}
_registry_lock = threading.Lock()


def _shared(key: str, threshold: int, timeout: float, clock: Clock) -> _Shared:
    with _registry_lock:
        state = _registry.get(key)
        if state is None:
            state = _registry[key] = _Shared(threshold, timeout, clock)
        elif (state.threshold, state.timeout, state.clock) != (threshold, timeout, clock):
            raise InvalidConfigError(
                f"circuit {key!r} already exists with failure_threshold={state.threshold}, "
                f"reset_timeout={state.timeout} (and its clock); breakers that share a key "
                "must agree on them"
            )
        return state


class CircuitBreaker:
    """A circuit breaker for the calls of a node or a task (see the module docstring).

    Example:
        >>> payments = CircuitBreaker("payments-api", failure_threshold=3, reset_timeout=60)
        >>> builder.add_node("charge", charge, circuit=payments)
        >>> @task(circuit=payments)
        ... def refund(order_id): ...

    Args:
        key: names the shared state: every breaker with this key in the process trips
            together.
        failure_threshold: consecutive failures that open the circuit (a success resets
            the count).
        reset_timeout: seconds the circuit stays open before one probe call is let through.
        clock: a monotonic clock in seconds (tests inject a fake one; default
            ``time.monotonic``).

    Raises:
        InvalidConfigError: a bad threshold or timeout, or another breaker already uses
            ``key`` with other settings.
    """

    __slots__ = ("key", "failure_threshold", "reset_timeout", "_state")

    def __init__(self, key: str, failure_threshold: int = 5, reset_timeout: float = 30.0, *,
                 clock: Clock = time.monotonic) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidConfigError(f"a circuit breaker needs a non-empty string key, got "
                                     f"{key!r}")
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) \
                or failure_threshold < 1:
            raise InvalidConfigError(
                f"circuit {key!r}: failure_threshold must be an integer >= 1, got "
                f"{failure_threshold!r}"
            )
        if isinstance(reset_timeout, bool) or not isinstance(reset_timeout, int | float) \
                or not reset_timeout >= 0:
            raise InvalidConfigError(
                f"circuit {key!r}: reset_timeout must be a number of seconds >= 0, got "
                f"{reset_timeout!r}"
            )
        self.key = key
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self._state = _shared(key, failure_threshold, self.reset_timeout, clock)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.key!r}, state={self.state!r})"

    @property
    def state(self) -> CircuitState:
        """``"closed"``, ``"open"`` or ``"half_open"`` (the timeout has elapsed: the next
        call, or the one running now, is the probe)."""
        s = self._state
        with s.lock:
            if s.opened_at is None:
                return "closed"
            if s.probing or s.clock() - s.opened_at >= s.timeout:
                return "half_open"
            return "open"

    def reset(self) -> None:
        """Close the circuit and forget its failures (for every breaker of the key)."""
        s = self._state
        with s.lock:
            s.failures = 0
            s.opened_at = None
            s.probing = False

    # -- used by the engine around each call (an attempt of a node or a task) ------------

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run the body as one call through the breaker: admitted (or refused with
        ``CircuitOpenError``), then counted as a success, a failure (an ``Exception``) or
        neither (an interrupt or a cancellation)."""
        probe = self.admit()
        try:
            yield
        except Exception:
            self.failed(probe)
            raise
        except BaseException:
            self.abandoned(probe)
            raise
        self.succeeded(probe)

    def admit(self) -> bool:
        """Let a call through, or refuse it. Returns whether the call is the probe.

        Raises:
            CircuitOpenError: the circuit is open (or half-open with a probe running).
        """
        s = self._state
        with s.lock:
            if s.opened_at is None:
                return False
            waited = s.clock() - s.opened_at
            if not s.probing and waited >= s.timeout:
                s.probing = True
                return True
            if s.probing:
                detail = "a probe call is testing the dependency"
            else:
                detail = f"it will let a probe call through in {s.timeout - waited:.3g}s"
        raise CircuitOpenError(
            f"circuit {self.key!r} is open after {s.threshold} consecutive failures; the call "
            f"did not run ({detail})"
        )

    def succeeded(self, probe: bool) -> None:
        """An admitted call returned: a probe closes the circuit; any success while closed
        resets the failure count."""
        s = self._state
        with s.lock:
            if probe:
                s.probing = False
                s.opened_at = None
                s.failures = 0
            elif s.opened_at is None:
                s.failures = 0

    def failed(self, probe: bool) -> None:
        """An admitted call raised: a probe reopens the circuit; the threshold-th
        consecutive failure while closed opens it."""
        s = self._state
        with s.lock:
            if probe:
                s.probing = False
                s.opened_at = s.clock()
            elif s.opened_at is None:
                s.failures += 1
                if s.failures >= s.threshold:
                    s.opened_at = s.clock()

    def abandoned(self, probe: bool) -> None:
        """An admitted call ended without an outcome (interrupted, cancelled): a probe
        frees its slot so that the next call probes."""
        if probe:
            s = self._state
            with s.lock:
                s.probing = False
