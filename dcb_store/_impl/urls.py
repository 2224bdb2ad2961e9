"""Database URLs: the spellings people use for PostgreSQL, normalized to the shipped driver."""

from __future__ import annotations

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

from dcb_store.errors import UnsupportedDatabaseError

_POSTGRES = ("postgres", "postgresql")


def normalize_url(url: str | URL) -> str | URL:
    """A PostgreSQL URL on the psycopg 3 driver (``postgresql+psycopg://``).

    ``postgres://``, ``postgresql://`` and ``postgresql+<any driver>://`` (psycopg2, asyncpg,
    pg8000...) all name a PostgreSQL server; the library connects to it with psycopg 3, the
    driver it ships with (also for asyncio). Anything else raises
    :class:`~dcb_store.errors.UnsupportedDatabaseError`. A string comes back as a string.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UnsupportedDatabaseError(
            f"not a database URL: {str(url)!r} (expected postgresql://user@host:port/database)"
        ) from exc
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in _POSTGRES:
        raise UnsupportedDatabaseError(
            f"dcb_store needs PostgreSQL, and {parsed.drivername}:// is not PostgreSQL "
            "(expected postgresql://user@host:port/database)"
        )
    parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed if isinstance(url, URL) else parsed.render_as_string(hide_password=False)
