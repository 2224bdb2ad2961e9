"""Query plans: reads use the indexes on a store large enough that the
planner would choose otherwise without them (EXPLAIN (FORMAT JSON) assertions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dcb_store import Query, QueryItem
from dcb_store._impl import statements as st
from dcb_store.bench.seed import seed_events


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(
    engine: Engine, query: Query, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    call = st.prepare_read(query, after, limit, backwards=False)
    sql = call.statement.text
    with engine.connect() as conn:
        raw = conn.execute(
            text("EXPLAIN (FORMAT JSON) " + sql), {**call.params, "cap": 10**12}
        ).scalar_one()
    doc = raw if isinstance(raw, list) else json.loads(raw)
    return list(plan_nodes(doc[0]["Plan"]))


def indexes_used(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["Index Name"] for n in nodes if "Index Name" in n}


@pytest.fixture
def big_store(engine: Engine) -> Engine:
    seed_events(engine, 100_000, progress=False)
    return engine


def test_tag_reads_use_the_gin_index(big_store: Engine) -> None:
    nodes = explain(big_store, Query.of(tags=["entity:42"]))
    assert "events_tags_gin" in indexes_used(nodes)
    assert not [
        n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "events"
    ]
    nodes = explain(
        big_store, Query([QueryItem(tags=["entity:1"]), QueryItem(tags=["entity:2"])]), after=50_000
    )
    assert "events_tags_gin" in indexes_used(nodes)


def test_type_only_reads_use_the_type_index(big_store: Engine) -> None:
    nodes = explain(big_store, Query.of(types=["Rare"]))
    assert "events_type_position" in indexes_used(nodes)


def test_without_the_gin_index_the_planner_scans(big_store: Engine) -> None:
    # the assertion above can fail: drop the index and the same read plans a scan
    with big_store.begin() as conn:
        conn.execute(text("DROP INDEX dcb.events_tags_gin"))
    assert "events_tags_gin" not in indexes_used(explain(big_store, Query.of(tags=["entity:42"])))
