"""The store works on PostgreSQL only: say so when it is handed anything else."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import UnboundExecutionError

from dcb_store.errors import UnsupportedDatabaseError


def _dialect_name(bind: Any) -> str | None:
    """The dialect of a Session, scoped_session, Connection or their async twins, if known."""
    dialect = getattr(bind, "dialect", None)  # Connection, AsyncConnection
    if dialect is None:
        sync = getattr(bind, "sync_session", bind)  # AsyncSession -> its Session
        try:
            engine = sync.get_bind()
        except (UnboundExecutionError, RuntimeError):
            # not bound yet (per mapper, per call, or an app context Flask-SQLAlchemy needs):
            # the first statement will tell
            return None
        dialect = getattr(engine, "dialect", None)
    return getattr(dialect, "name", None)


def require_postgresql(bind: Any) -> None:
    """Raise :class:`UnsupportedDatabaseError` when ``bind`` is not on PostgreSQL."""
    name = _dialect_name(bind)
    if name is not None and name != "postgresql":
        raise UnsupportedDatabaseError(
            f"dcb_store needs PostgreSQL; this session or connection is on {name}"
        )
