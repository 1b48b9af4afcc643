"""``ensure_key`` (``THREADLOOM_API_KEY``) registers the key once, also when several processes
start together and race to register it (two workers of a deployment starting at once)."""

from __future__ import annotations

from typing import Any

import pytest

from threadloom.checkpoint.queue import ApiKey, RuntimeStore
from threadloom.errors import InvalidConfigError
from threadloom.server.auth import authenticate, ensure_key, key_id_of

KEY = "race-key-" + "x" * 24


class LateReader:
    """``store``, whose first ``get_key`` answers as if the key were not registered yet: the
    other process registers it between this one's look and its insert."""

    def __init__(self, store: RuntimeStore) -> None:
        self.store = store
        self.looked = False

    def get_key(self, key_id: str) -> ApiKey | None:
        if not self.looked:
            self.looked = True
            ensure_key(self.store, KEY)  # the other process wins the race
            return None
        return self.store.get_key(key_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_key_registered_meanwhile_by_another_process_is_taken(
        store: RuntimeStore) -> None:
    record = ensure_key(LateReader(store), KEY)  # type: ignore[arg-type]
    assert record.key_id == key_id_of(KEY)
    assert [k.key_id for k in store.list_keys()] == [key_id_of(KEY)]
    assert authenticate(store, KEY, None) is not None


def test_ensure_key_is_idempotent_and_refuses_a_revoked_key(store: RuntimeStore) -> None:
    first = ensure_key(store, KEY)
    assert ensure_key(store, KEY) == first
    store.revoke_key(first.key_id)
    with pytest.raises(InvalidConfigError, match="revoked"):
        ensure_key(store, KEY)
