"""Alembic environment of dcb_store.

Used from the repository root (``alembic upgrade head``, target from ``-x url=...``,
DATABASE_URL or ``sqlalchemy.url``; ``-x force=yes`` lets a downgrade to base drop events) and
by Alembic commands given ``migrations.alembic_config()``. It runs the same checks and keeps the
same version record (``dcb.alembic_version``) as :func:`dcb_store.migrations.upgrade`.
"""

from __future__ import annotations

from alembic import context
from dcb_store.migrations import run_environment

run_environment(context)
