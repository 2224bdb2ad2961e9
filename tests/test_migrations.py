"""Migrations: the packaged revisions build the schema, downgrade cleanly, and run from the
repository root through Alembic's own command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from dcb_store import migrations

ROOT = Path(__file__).resolve().parent.parent

EXPECTED_FUNCTIONS = {
    "append_v1",
    "in_flight_cap_v1",
    "lock_key_v1",
    "query_key_names_v1",
    "query_keys_v1",
    "get_advisory_lock_count",
    "get_advisory_lock_stats",
    "reject_history_change_v1",
    "notify_appended_v1",
    "append_v2",
    "read_v1",
    "notify_appended_v2",
    "appends_in_flight_v1",
    "lock_key_v2",
    "append_v3",
    "append_v4",
    "append_v5",
    "prune_traces_v2",
    "check_snapshot_v1",
    "check_items_v1",
    "insert_events_v1",
    "tags_are_hot_v1",
    "hot_tags_from_statistics_v1",
    "events_analyzed_at_v1",
    "refresh_hot_tags_v1",
    "prune_traces_v1",
    "is_store_session_v1",
    "is_store_holder_v1",
    "is_store_role_v1",
    "in_flight_cap_v2",
    "appends_in_flight_v2",
    "event_valid_v1",
    "cached_hot_tags_v1",
}
EXPECTED_TABLES = {"events", "key_clocks", "checkpoints", "append_traces"}
V1_APPEND = text("SELECT * FROM dcb.append_v1(CAST(:events AS jsonb), '{}', NULL, 100)")


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migrations.alembic_config()).get_current_head() or ""


def schema_objects(url: str) -> tuple[set[str], set[str], set[str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = set(
            conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'dcb'")).scalars()
        )
        indexes = set(
            conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE schemaname = 'dcb'")
            ).scalars()
        )
        functions = set(
            conn.execute(
                text(
                    "SELECT p.proname FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'dcb'"
                )
            ).scalars()
        )
    engine.dispose()
    return tables, indexes, functions


def test_upgrade_downgrade_upgrade_through_a_connection(fresh_db_url: str) -> None:
    tables, indexes, functions = schema_objects(fresh_db_url)  # the template is migrated
    assert EXPECTED_TABLES | {"alembic_version"} <= tables
    assert {"events_pkey", "events_tags_gin", "events_type_position", "events_id_key"} <= indexes
    assert functions >= EXPECTED_FUNCTIONS
    engine = create_engine(fresh_db_url)
    with engine.begin() as conn:
        migrations.downgrade(conn, "base")
    assert schema_objects(fresh_db_url) == (set(), set(), set())
    with engine.begin() as conn:
        migrations.upgrade(conn)
        version = conn.execute(text("SELECT version_num FROM dcb.alembic_version")).scalar_one()
    engine.dispose()
    assert version == head_revision() == migrations.head()
    assert schema_objects(fresh_db_url) == (tables, indexes, functions)


def test_alembic_upgrade_head_from_the_repository_root(fresh_db_url: str) -> None:
    engine = create_engine(fresh_db_url)
    with engine.begin() as conn:
        migrations.downgrade(conn, "base")
    engine.dispose()
    env = {**os.environ, "DATABASE_URL": fresh_db_url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert schema_objects(fresh_db_url)[2] >= EXPECTED_FUNCTIONS


def test_upgrade_from_every_earlier_revision_keeps_the_events(fresh_db_url: str) -> None:
    from alembic.script import ScriptDirectory

    from dcb_store import EventStore

    revisions = [
        r.revision
        for r in ScriptDirectory.from_config(migrations.alembic_config()).walk_revisions()
    ]
    engine = create_engine(fresh_db_url)
    for start in reversed(revisions[1:]):  # every revision below head
        with engine.begin() as conn:
            migrations.downgrade(conn, "base", force=True)  # the last round's events go
            migrations.upgrade(conn, start)
            # written as code of that revision's time writes: through append_v1
            events = json.dumps(
                [{"type": "Before", "tags": ["upgrade:test"], "data": {"from": start}}]
            )
            conn.execute(V1_APPEND, {"events": events})
            migrations.upgrade(conn, "heads")
            version = conn.execute(text("SELECT version_num FROM dcb.alembic_version")).scalar_one()
            assert version == revisions[0]
            assert [e.data for e in EventStore(conn).read()] == [{"from": start}]
    engine.dispose()
    assert revisions[0] == head_revision() and len(revisions) >= 4


def test_append_v1_still_answers_old_callers(fresh_db_url: str) -> None:
    """Revision 0004 keeps the old function working (a wrapper over append_v2) during a deploy."""
    engine = create_engine(fresh_db_url)
    with engine.begin() as conn:
        row = conn.execute(V1_APPEND, {"events": '[{"type": "A", "tags": [], "data": {}}]'}).one()
        assert tuple(row) == ("00000", 1, None)
        migrations.downgrade(conn, "0003_following")  # v1 gets its own body back
        row = conn.execute(V1_APPEND, {"events": '[{"type": "B", "tags": [], "data": {}}]'}).one()
        assert tuple(row) == ("00000", 2, None)
        migrations.upgrade(conn)
    engine.dispose()
