"""Helpers of the tests of several stores in one database (issue #15)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import EventStore, migrations

STORES = ("dcb", "billing", "tenant_7")
T = TypeVar("T")


def migrate_stores(url: str) -> None:
    """Add the stores ``billing`` and ``tenant_7`` to a database that has ``dcb``."""
    for schema in STORES[1:]:
        migrations.upgrade(url, schema=schema)


def in_flight(engine: Engine, schema: str) -> int:
    """How many appends of other sessions the store ``schema`` counts as in flight."""
    with engine.connect() as conn:
        return int(conn.execute(text(f'SELECT "{schema}".appends_in_flight_v2()')).scalar_one())


def head(engine: Engine, schema: str) -> int | None:
    with Session(engine) as s:
        return EventStore(s, schema=schema).head()


def timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    result = work()
    return result, time.monotonic() - started
