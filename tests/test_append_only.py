"""History is append-only: UPDATE, DELETE and TRUNCATE are refused; one deliberate escape hatch."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import Event, EventStore


def test_history_is_append_only_with_a_deliberate_escape_hatch(engine: Engine) -> None:
    from sqlalchemy.exc import DBAPIError

    with Session(engine) as s:
        EventStore(s).append([Event("A", {"pii": "x"}, ["user:1"]), Event("B")])
        s.commit()
    for statement in (
        "UPDATE dcb.events SET data = '{}'",
        "DELETE FROM dcb.events",
        "TRUNCATE dcb.events",
    ):
        with engine.connect() as conn:
            with pytest.raises(DBAPIError) as info:
                conn.execute(text(statement))
            assert info.value.orig.sqlstate == "DCB10"  # type: ignore[union-attr]
            conn.rollback()
    with engine.begin() as conn:
        conn.execute(text("SELECT dcb.allow_erasure_v1()"))
        conn.execute(text("DELETE FROM dcb.events WHERE 'user:1' = ANY (tags)"))
    with Session(engine) as s:
        assert [e.type for e in EventStore(s).read()] == ["B"]
