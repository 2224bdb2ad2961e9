"""Small helpers shared by the store's tests."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def count_events(session: Session) -> int:
    return session.execute(text("SELECT count(*) FROM dcb.events")).scalar_one()
