"""A host application made the way a user makes one, and the real commands run in it.

``make_host`` runs ``alembic init``, writes a model and adds the one documented line to the
generated ``env.py``; ``alembic``, ``dcb_store_cli`` and ``repo_alembic`` run the commands as
subprocesses, as a user's shell would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent

MODELS = """
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
"""

# The one line of the contract, on the connection the host's own migrations use.
ONE_LINE = "        dcb_store.migrations.upgrade(connection)\n"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def make_host(root: Path, url: str) -> Path:
    """A new host project in ``root`` (created), migrating ``url``; returns its directory."""
    root.mkdir(parents=True, exist_ok=True)
    done = run([sys.executable, "-m", "alembic", "init", "migrations"], cwd=root)
    assert done.returncode == 0, done.stderr
    (root / "models.py").write_text(MODELS)
    env_py = root / "migrations" / "env.py"
    source = env_py.read_text()
    source = source.replace("from alembic import context\n", "from alembic import context\n\n")
    source = source.replace(
        "target_metadata = None",
        "import dcb_store.migrations\nfrom models import Base\n\ntarget_metadata = Base.metadata",
    )
    configure = "        context.configure(\n            connection=connection,"
    assert source.count(configure) == 1, "the generated env.py changed shape"
    env_py.write_text(source.replace(configure, ONE_LINE + configure))
    ini = root / "alembic.ini"
    ini.write_text(
        ini.read_text().replace("driver://user:pass@localhost/dbname", url.replace("%", "%%"))
    )
    return root


def alembic(host: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``alembic ARGS`` in the host project."""
    return run([sys.executable, "-m", "alembic", *args], cwd=host)


def repo_alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``alembic ARGS`` from the repository root (its alembic.ini), on ``url``."""
    return run([sys.executable, "-m", "alembic", *args], cwd=ROOT, DATABASE_URL=url)


def dcb_store_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``dcb-store ARGS``."""
    return run([sys.executable, "-m", "dcb_store.cli", *args], cwd=ROOT)


def scalar(url: str, sql: str) -> object:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def store_revision(url: str) -> object:
    """The store's revision(s) in ``dcb.alembic_version``, or None without the table."""
    if not scalar(url, "SELECT to_regclass('dcb.alembic_version') IS NOT NULL"):
        return None
    return scalar(url, "SELECT string_agg(version_num, ',') FROM dcb.alembic_version")


def one_clear_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The failed command's stderr: one line, no traceback, naming ``needles``."""
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
