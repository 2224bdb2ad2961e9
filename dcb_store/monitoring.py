"""A watcher that warns when the library holds too many advisory locks.

``LockWatcher(engine, threshold=1000)`` polls ``dcb.get_advisory_lock_count()`` on its own
connection (it takes an Engine: it is long-lived and never touches the caller's transactions)
and logs a warning each time the count is above the threshold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from dcb_store._impl import statements as st
from dcb_store._impl.errors import raise_driver_error

__all__ = ["LockWatcher"]

logger = logging.getLogger("dcb_store.locks")


class LockWatcher:
    """Poll the advisory-lock count every ``interval`` seconds; warn above ``threshold``."""

    def __init__(
        self,
        engine: Engine,
        *,
        threshold: int = 1000,
        interval: float = 30.0,
        log: logging.Logger = logger,
        on_count: Callable[[int], object] | None = None,
        schema: str = "dcb",
    ) -> None:
        if threshold < 0 or interval <= 0:
            raise ValueError("threshold must be >= 0 and interval > 0")
        self.engine = engine
        self.schema = schema  # the store whose locks are counted
        self._count = st.for_schema(schema).LOCK_COUNT
        self.threshold = threshold
        self.interval = interval
        self.log = log
        self.on_count = on_count  # e.g. a Prometheus gauge's set
        self.last_count: int | None = None
        self.warnings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> int:
        """Poll once; log a warning if the count is above the threshold. Returns the count."""
        try:
            with self.engine.connect() as conn:
                count = int(conn.execute(self._count).scalar_one())
        except DBAPIError as exc:
            raise_driver_error(exc)
        self.last_count = count
        if self.on_count is not None:
            self.on_count(count)
        if count > self.threshold:
            self.warnings += 1
            self.log.warning(
                "dcb_store holds %d advisory locks (threshold %d)", count, self.threshold
            )
        return count

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # keep watching through a database restart
                self.log.exception("dcb_store lock watcher could not read the lock count")
            self._stop.wait(self.interval)

    def start(self) -> LockWatcher:
        """Start polling in a daemon thread."""
        self._thread = threading.Thread(
            target=self._run, name="dcb-store-lock-watcher", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> LockWatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
