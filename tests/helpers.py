"""Small helpers shared by the store's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session


def count_events(session: Session) -> int:
    return session.execute(text("SELECT count(*) FROM dcb.events")).scalar_one()


def count_tagged(engine: Engine, tag: str) -> int:
    """The stored events carrying ``tag``, seen from a connection of its own."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM dcb.events WHERE tags @> ARRAY[CAST(:t AS text)]"),
                {"t": tag},
            ).scalar_one()
        )


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)
