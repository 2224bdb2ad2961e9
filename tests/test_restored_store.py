"""A store restored from a dump onto another server (docs/scaling.md): its write traces and
their horizon name the old server's transaction ids. The documented step forgets them; without
it, REPEATABLE READ decisions refuse until the new server's ids pass the restored horizon.
Modelled here by writing what a restore would bring: a horizon and trace rows above this
server's transaction ids."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import AppendCondition, Event, EventStore, Query
from dcb_store.errors import SerializationConflictError

FORGET = [
    "TRUNCATE dcb.append_traces",
    "SELECT setval('dcb.trace_horizon_seq', 0)",
]


def _restore_from_a_busier_server(engine: Engine) -> None:
    with engine.begin() as conn:
        ahead = "pg_current_xact_id()::text::bigint + 1000000"
        conn.execute(text(f"SELECT setval('dcb.trace_horizon_seq', {ahead})"))
        conn.execute(
            text(
                "INSERT INTO dcb.append_traces (xid, key, first_position) "
                f"SELECT ({ahead} + i)::text::xid8, dcb.lock_key_v2('a:'), 10000000 + i "
                "FROM generate_series(1, 10) i"
            )
        )


def _decide(engine: Engine) -> int:
    with Session(engine) as s:
        s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        store = EventStore(s)
        head = store.read(Query.of(tags=["course:c1"])).head
        position = store.append(
            Event("Enrolled", {}, ["course:c1"]),
            AppendCondition(Query.of(tags=["course:c1"]), after=head),
        )
        s.commit()
        return position


def test_the_documented_step_lets_decisions_run_on_a_restored_store(engine: Engine) -> None:
    _restore_from_a_busier_server(engine)
    with pytest.raises(SerializationConflictError, match="older than the write traces"):
        _decide(engine)
    with engine.begin() as conn:
        for statement in FORGET:
            conn.execute(text(statement))
    assert _decide(engine) > 0
    with engine.begin() as conn:
        traces = conn.execute(text("SELECT count(*) FROM dcb.append_traces")).scalar_one()
    assert traces == 3  # the decision's own: its tag, its type, "all"
