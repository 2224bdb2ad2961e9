"""The LISTEN connection of a subscription, opened exactly like the engine's own connections.

It comes from ``engine.raw_connection()``, detached from the pool: the engine's URL,
``connect_args`` (sslmode, password, options...), ``do_connect`` and ``connect`` event handlers
all apply, and the connection never returns to the pool (where its LISTEN would leak into other
work). Any failure closes it; the subscription opens it again before its next read, and polls
in the meantime.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

__all__ = ["Listener"]


class Listener:
    """A LISTEN on ``channel`` over a connection of ``engine``'s own making."""

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self._fairy: Any = None
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def connected(self) -> bool:
        """Whether a listening connection is open."""
        return self._conn is not None and not self._conn.closed

    def open(self) -> bool:
        """Listen, opening the connection if needed; False while it cannot be opened."""
        if self.connected:
            return True
        self.close()
        try:
            self._fairy = self.engine.raw_connection()
            conn = self._fairy.driver_connection
            self._fairy.detach()  # closed for real when we close it, never pooled again
            if not isinstance(conn, psycopg.Connection):  # pragma: no cover - other drivers
                self.close()
                return False
            self._conn = conn
            conn.rollback()  # whatever the pool's connect hooks left open
            conn.autocommit = True
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except (DBAPIError, psycopg.Error):
            self.close()
            return False
        return True

    def wait(self, timeout: float, stopped: threading.Event) -> bool:
        """Sleep until a notification (True), ``timeout`` or ``stopped`` (False).

        Without a connection it just sleeps; a connection that fails is closed.
        """
        conn = self._conn
        if conn is None:
            stopped.wait(timeout)
            return False
        try:
            waited = 0.0
            step = min(0.25, timeout)  # short steps, so that stop() is prompt
            while waited < timeout and not stopped.is_set():
                if any(True for _ in conn.notifies(timeout=step, stop_after=1)):
                    return True
                waited += step
        except psycopg.Error:  # a lost listener: the next read opens it again
            self.close()
        return False

    def close(self) -> None:
        """Close the listening connection (if any)."""
        conn, fairy, self._fairy, self._conn = self._conn, self._fairy, None, None
        with contextlib.suppress(Exception):  # closing a broken connection
            if conn is not None:
                conn.close()
            if fairy is not None:
                fairy.invalidate()  # no reset (rollback) on a closed or broken connection
