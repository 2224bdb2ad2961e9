"""The documentation's snippets run: every ```python block of docs/usage.md, in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


def test_usage_snippets_run(fresh_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_db_url)
    blocks = python_blocks("usage.md")
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "docs_usage"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/usage.md block {i + 1}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - reported with the block number
            raise AssertionError(f"docs/usage.md python block {i + 1} failed: {exc!r}") from exc
    for name in ("session", "engine"):
        obj = namespace.get(name)
        if hasattr(obj, "close"):
            obj.close()  # type: ignore[union-attr]
    namespace["engine"].dispose()  # type: ignore[union-attr]


def test_api_reference_is_current() -> None:
    from dcb_store._apidoc import render

    assert (DOCS / "api.md").read_text() == render(), (
        "run: python -m dcb_store._apidoc > docs/api.md"
    )


def test_readme_snippet_runs_on_an_empty_database(
    blank_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (DOCS.parent / "README.md").read_text()
    snippet = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    monkeypatch.setenv("DATABASE_URL", blank_db_url)
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(snippet, "README.md snippet", "exec"), namespace)
    subscribe = namespace["subscribe"]
    assert subscribe("c1", "s1") is False  # type: ignore[operator]  # no such course (yet)
    from sqlalchemy.orm import Session

    from dcb_store import Event, EventStore

    engine = namespace["engine"]
    with Session(engine) as session:  # type: ignore[arg-type]
        EventStore(session).append(Event("CourseDefined", {"capacity": 1}, ["course:c1"]))
        session.commit()
    assert subscribe("c1", "s1") is True  # type: ignore[operator]
    assert subscribe("c1", "s2") is False  # type: ignore[operator]  # full
    engine.dispose()  # type: ignore[attr-defined]
