"""Test helpers for threadloom and for people who write store backends.

:class:`StoreConformance` is the store contract as a pytest test class: subclass it, provide
a ``store`` fixture that yields a fresh, set-up store, and every test of the contract runs on
your backend::

    import pytest
    from threadloom.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            s = MyStore(tmp_path / "db")
            s.setup()
            yield s
            s.close()

:class:`QueueConformance` does the same for the runtime's part of the protocol
(:class:`~threadloom.checkpoint.queue.RuntimeStore`: queue, events, signals, workers, keys).

This package imports ``pytest``, which is a test dependency only (``threadloom[test]``); the
rest of threadloom never imports it.
"""

from __future__ import annotations

from threadloom.testing.conformance import StoreConformance
from threadloom.testing.queue_conformance import QueueConformance

__all__ = ["QueueConformance", "StoreConformance"]
