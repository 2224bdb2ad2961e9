"""Run the packaged Alembic revisions: ``upgrade(bind)`` brings a database to the current schema."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine, pool

from alembic import command

__all__ = ["alembic_config", "downgrade", "normalize_url", "script_location", "upgrade"]


def normalize_url(url: str | URL) -> str | URL:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs."""
    if isinstance(url, str) and url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def script_location() -> str:
    """The directory of the packaged Alembic environment and revisions: ``dcb_store/alembic``.

    It has no ``__init__.py`` on purpose (as a package it could shadow the real ``alembic``);
    a host app names its revisions as the package resource ``dcb_store:alembic/versions``.
    """
    path = Path(__file__).resolve().parent / "alembic"
    if not (path / "env.py").is_file():
        raise RuntimeError(f"the packaged migrations are missing (looked in {path})")
    return str(path)


def alembic_config() -> Config:
    """An Alembic Config pointing at the revisions shipped inside the package."""
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    return cfg


def _run(bind: Engine | Connection | str | URL, revision: str, up: bool) -> None:
    cfg = alembic_config()
    if isinstance(bind, Connection):
        cfg.attributes["connection"] = bind
        (command.upgrade if up else command.downgrade)(cfg, revision)
        return
    engine = (
        bind
        if isinstance(bind, Engine)
        else create_engine(normalize_url(bind), poolclass=pool.NullPool)
    )
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.upgrade if up else command.downgrade)(cfg, revision)
    finally:
        if engine is not bind:
            engine.dispose()


def upgrade(bind: Engine | Connection | str | URL, revision: str = "heads") -> None:
    """Apply the packaged revisions up to ``revision`` (default: all)."""
    _run(bind, revision, up=True)


def downgrade(bind: Engine | Connection | str | URL, revision: str) -> None:
    """Revert the packaged revisions down to ``revision`` (``"base"`` removes the schema)."""
    _run(bind, revision, up=False)
