"""Alembic environment of dcb_store.

Used from the repository root (``alembic upgrade head``, target from DATABASE_URL or
``-x url=...``) and by :func:`dcb_store.migrations.upgrade`, which hands in a connection.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine, pool

from alembic import context
from dcb_store.migrations import normalize_url

VERSION_TABLE = "dcb_store_alembic_version"

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DATABASE_URL")
    if not url:
        url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set DATABASE_URL (or pass -x url=...) to the database to migrate")
    return str(normalize_url(url))


def run_offline() -> None:
    context.configure(url=_url(), literal_binds=True, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
