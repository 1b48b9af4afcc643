"""The server's settings: what ``create_app`` needs beyond the store and the graphs."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings of one API process.

    Attributes:
        max_body_bytes: requests with a larger body get 413 (default 1 MiB).
        worker_stale_after: ``/ready`` fails when no worker heartbeat is this recent
            (seconds); ``None`` skips the check (an API-only process that does not care).
        wait_poll: seconds between re-reads of a run that ``wait``/``join``/streams follow,
            in case a signal was missed (signals wake them at once otherwise).
        run_lease: seconds a worker's claim on a run lasts without a heartbeat.
        fast_lane: serve the create-and-wait routes through
            :class:`~threadloom.server._fastlane.FastLane` (the same answers, less CPU);
            ``False`` sends every request through FastAPI's routing.
    """

    max_body_bytes: int = 1024 * 1024
    worker_stale_after: float | None = 15.0
    wait_poll: float = 1.0
    run_lease: float = 5.0
    fast_lane: bool = True
