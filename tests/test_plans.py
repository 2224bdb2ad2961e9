"""Query plans: reads use the indexes on a store large enough that the planner would choose
otherwise without them.

A read is one call of ``dcb.read_v1``; the plans that matter are those of the statements inside
it. ``auto_explain`` (with nested statements, logged at NOTICE level) hands them to the client
as EXPLAIN (FORMAT JSON) documents. The embedded server ships without auto_explain, so there
these tests skip; CI runs them against PostgreSQL 15.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from dcb_store import Query, QueryItem
from dcb_store._impl import statements as st
from dcb_store.bench.seed import seed_events
from tests.helpers import plan_nodes


def explain(engine: Engine, query: Query, after: int = 0, limit: int | None = None) -> list[dict]:
    """Every plan node of every statement the read runs inside ``dcb.read_v1``."""
    notices: list[str] = []
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        try:
            conn.execute(text("LOAD 'auto_explain'"))
        except Exception as exc:  # the embedded server has no auto_explain
            pytest.skip(f"auto_explain is not available on this server: {exc}")
        for setting, value in [
            ("log_min_duration", "0"),
            ("log_nested_statements", "on"),
            ("log_format", "json"),
            ("log_level", "notice"),
        ]:
            conn.execute(text(f"SET auto_explain.{setting} = '{value}'"))
        driver.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        call = st.prepare_read(query, after, limit, backwards=False)
        conn.execute(st.READ, call.params).all()
        conn.rollback()
    nodes: list[dict[str, Any]] = []
    for message in notices:
        doc = json.loads(message[message.index("{") :])
        nodes += plan_nodes(doc["Plan"])
    assert nodes, "auto_explain reported no plan"
    return nodes


def scans_of_events(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for n in nodes if n.get("Relation Name") == "events"]


def indexes_used(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["Index Name"] for n in nodes if "Index Name" in n}


@pytest.fixture
def big_store(engine: Engine) -> Engine:
    seed_events(engine, 100_000, progress=False)
    return engine


def test_tag_reads_use_the_gin_index(big_store: Engine) -> None:
    nodes = explain(big_store, Query.of(tags=["entity:42"]))
    assert "events_tags_gin" in indexes_used(nodes)
    assert not [n for n in scans_of_events(nodes) if n["Node Type"] == "Seq Scan"]
    nodes = explain(
        big_store, Query([QueryItem(tags=["entity:1"]), QueryItem(tags=["entity:2"])]), after=50_000
    )
    assert "events_tags_gin" in indexes_used(nodes)
    assert not [n for n in scans_of_events(nodes) if n["Node Type"] == "Seq Scan"]


def test_type_only_reads_use_the_type_index(big_store: Engine) -> None:
    nodes = explain(big_store, Query.of(types=["Rare"]))
    assert "events_type_position" in indexes_used(nodes)
    assert not [n for n in scans_of_events(nodes) if n["Node Type"] == "Seq Scan"]


def test_many_one_tag_items_take_one_scan_of_the_tag_index(big_store: Engine) -> None:
    # 100 entities at once: one bitmap scan of the GIN index, not one scan per item
    nodes = explain(big_store, Query([QueryItem(tags=[f"entity:{i}"]) for i in range(100)]))
    gin_scans = [n for n in nodes if n.get("Index Name") == "events_tags_gin"]
    assert len(gin_scans) == 1, gin_scans
    assert not [n for n in scans_of_events(nodes) if n["Node Type"] == "Seq Scan"]


def test_mixed_multi_item_reads_use_the_indexes(big_store: Engine) -> None:
    query = Query(
        [
            QueryItem(types=["Rare"]),
            QueryItem(tags=["entity:1", "entity:2"]),
            QueryItem(types=["Seeded"], tags=["entity:3"]),
        ]
    )
    nodes = explain(big_store, query, after=10)
    assert {"events_tags_gin", "events_type_position"} <= indexes_used(nodes)
    assert not [n for n in scans_of_events(nodes) if n["Node Type"] == "Seq Scan"]


def test_without_the_gin_index_the_planner_scans(big_store: Engine) -> None:
    # the assertion above can fail: drop the index and the same read plans a scan
    with big_store.begin() as conn:
        conn.execute(text("DROP INDEX dcb.events_tags_gin"))
    nodes = explain(big_store, Query.of(tags=["entity:42"]))
    assert "events_tags_gin" not in indexes_used(nodes)
    assert [n for n in scans_of_events(nodes) if n["Node Type"] == "Seq Scan"]


def test_a_page_on_a_hot_tag_walks_the_primary_key(engine: Engine) -> None:
    """A tag on every event (a tenant's): the GIN index would hand over all its rows, unordered;
    planned with the tag's frequency, a page walks the primary key from ``after`` instead."""
    seed_events(engine, 100_000, progress=False, per_tag=100_000)  # entity:0 on every event
    for after in (0, 50_000, 99_900):
        nodes = explain(engine, Query.of(tags=["entity:0"]), after=after, limit=100)
        tag_scans = [
            n
            for n in scans_of_events(nodes)
            if "tags" in n.get("Filter", "") + n.get("Index Cond", "") + n.get("Recheck Cond", "")
        ]
        assert tag_scans, after
        for scan in tag_scans:
            assert scan["Node Type"] == "Index Scan", (after, scan)
            assert scan.get("Index Name") == "events_pkey", (after, scan)
    # a rare tag in the same store still goes through the GIN index, a page of it too (the
    # statistics estimate a tag they do not list from the hot one: planning by them alone
    # walked the whole primary key for it)
    for limit in (None, 100):
        nodes = explain(engine, Query.of(tags=["seed:123"]), limit=limit)
        assert "events_tags_gin" in indexes_used(nodes), limit
