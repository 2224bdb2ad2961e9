"""The lock watcher warns above its threshold, on real locks."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dcb_store import Event, EventStore
from dcb_store.monitoring import LockWatcher


def test_watcher_warns_while_locks_are_held_and_stops_after(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dcb_store.locks")
    holder = Session(engine)
    EventStore(holder).append([Event("A", tags=[f"lock:k:{i}"]) for i in range(5)])
    held = EventStore(holder).lock_count()
    with LockWatcher(engine, threshold=3, interval=0.05) as watcher:
        deadline = time.monotonic() + 5
        while watcher.warnings == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watcher.warnings > 0 and watcher.last_count == held
        holder.rollback()
        deadline = time.monotonic() + 5
        while watcher.last_count != 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        warned = watcher.warnings
        time.sleep(0.2)
        assert watcher.last_count == 0 and watcher.warnings == warned  # no warning below threshold
    assert f"holds {held} advisory locks (threshold 3)" in caplog.text
    holder.close()
    with pytest.raises(ValueError):
        LockWatcher(engine, interval=0)
