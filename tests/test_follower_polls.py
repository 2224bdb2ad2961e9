"""A follower's poll in one statement at AUTOCOMMIT, and what the server's default level does to it.

A subscription polls with one statement (``FOLLOWER_READ``: the in-flight check, then the read)
and an idle projection runner asks one (``RUNNER_PEEK``), both at AUTOCOMMIT, where the
statement runs at the server's ``default_transaction_isolation``. Under a snapshot ``read_v1``
would probe and refuse; the statements then skip the read, and the follower falls back to a
transaction at READ COMMITTED (an adversarial review found subscriptions dying on 40001 when a
database defaulted to REPEATABLE READ).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from dcb_store import Event, EventStore, ProjectionRunner, Query, subscribe
from dcb_store._impl import statements as st
from dcb_store._impl.driver import _driver_sql
from tests.helpers import plan_nodes

LEVELS = ["repeatable read", "serializable"]


@pytest.fixture(params=LEVELS)
def defaulted(request: pytest.FixtureRequest, fresh_db_url: str) -> Iterator[Engine]:
    """An engine on a database whose sessions default to a snapshot level."""
    name = make_url(fresh_db_url).database
    admin = create_engine(fresh_db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        level = request.param
        conn.execute(
            text(f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{level}'")
        )
    admin.dispose()
    engine = create_engine(fresh_db_url)
    yield engine
    engine.dispose()


def _plan(conn: Any, statement: Any, params: dict[str, Any]) -> dict[str, Any]:
    sql, names = _driver_sql(statement)
    cur = conn.connection.driver_connection.cursor()
    cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, [params[n] for n in names])
    return cur.fetchone()[0][0]["Plan"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("statement", ["FOLLOWER_READ", "RUNNER_PEEK"])
def test_under_a_snapshot_level_the_statement_never_runs_the_read(
    defaulted: Engine, statement: str
) -> None:
    """The read is gated by a one-time filter: never executed under a snapshot, so it cannot
    probe and refuse (without the subquery's OFFSET 0 PostgreSQL made the gate a join filter
    and ran read_v1 anyway)."""
    params = {"items": json.dumps([{"tags": ["a"]}]), "after": 0, "limit": 10, "n": "p"}
    with defaulted.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        scans = [
            node
            for node in plan_nodes(_plan(conn, getattr(st, statement), params))
            if node.get("Function Name") == "read_v1"
        ]
    assert len(scans) == 1 and scans[0]["Actual Loops"] == 0, scans


def _write(engine: Engine, tag: str, n: int) -> None:
    for _ in range(n):
        with Session(engine) as s:
            EventStore(s).append(Event("E", {}, [tag]))
            time.sleep(random.random() * 0.005)  # commits out of position order
            s.commit()


def test_a_subscription_follows_writers_on_a_snapshot_default(defaulted: Engine) -> None:
    writers = [threading.Thread(target=_write, args=(defaulted, "k:1", 40)) for _ in range(2)]
    sub = subscribe(defaulted, Query.of(tags=["k:1"]), poll_interval=0.5, busy_interval=0.01)
    seen: list[int] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for event in sub:
                seen.append(event.position)
                if len(seen) == 80:
                    sub.stop()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    follower.join(30)
    sub.stop()
    assert not errors, errors
    with Session(defaulted) as s:
        assert seen == [e.position for e in EventStore(s).read(Query.of(tags=["k:1"]))]


def test_an_idle_runner_on_a_snapshot_default_still_applies_what_arrives(
    defaulted: Engine,
) -> None:
    applied: list[int] = []
    runner = ProjectionRunner(
        defaulted, "r", lambda _s, events: applied.extend(e.position for e in events)
    )
    assert runner.run_once() == 0
    _write(defaulted, "k:2", 3)
    assert runner.catch_up() == 3
    assert runner.run_once() == 0 and len(applied) == 3
