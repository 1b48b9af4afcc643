"""Delta encoding of channel values: full values plus appended-item blobs.

Pure functions shared by every backend and by the engine, so that the chain rules live in one
place. A channel whose reducer only appends (``operator.add`` on lists, for instance) is
stored as a full blob followed by blobs holding just the appended items; a full snapshot is
written again once the appended bytes since the last one reach the snapshot's own size, so
the total stays O(final size) and reading the latest value needs one snapshot plus the
deltas after it.
"""

from __future__ import annotations

from collections.abc import Iterable

from threadloom.checkpoint.base import BlobRecord, CheckpointRecord

__all__ = ["blob_floors", "resolve_chain"]


def resolve_chain(blobs: Iterable[BlobRecord], version: int) -> list[BlobRecord]:
    """The blobs that rebuild a channel at ``version``, oldest (the full blob) first.

    ``blobs`` may contain blobs of other lineages (after a fork); only the chain reached by
    following ``prev`` back from ``version`` is returned.

    Raises:
        LookupError: a blob of the chain is missing.
    """
    by_version = {b.version: b for b in blobs}
    chain: list[BlobRecord] = []
    v: int | None = version
    while v is not None:
        blob = by_version.get(v)
        if blob is None:
            raise LookupError(f"missing blob at version {v} (chain for version {version})")
        chain.append(blob)
        v = blob.prev
    chain.reverse()
    return chain


def blob_floors(kept: Iterable[CheckpointRecord]) -> dict[str, int]:
    """For pruning: channel -> the lowest blob version any kept checkpoint can need (the
    smallest base of its chains). Blobs below a channel's floor, and blobs of channels no
    kept checkpoint has, can be deleted."""
    floors: dict[str, int] = {}
    for record in kept:
        for channel, (_version, base) in record.channels.items():
            current = floors.get(channel)
            if current is None or base < current:
                floors[channel] = base
    return floors
