"""Lock timeouts from context: ``with dcb_store.lock_timeout(2.0): ...``.

A ContextVar, so each thread and each asyncio task sees its own value. Precedence: the
``lock_timeout=`` argument of a call, then the innermost context, then the store's default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

from dcb_store._impl.statements import timeout_ms

__all__ = ["DEFAULT", "lock_timeout", "resolve_lock_timeout"]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: Marks "not given" for per-call options (distinct from None, which means "no timeout").
DEFAULT: Final = _Default()

_context: ContextVar[float | None | _Default] = ContextVar(
    "dcb_store_lock_timeout", default=DEFAULT
)


@contextmanager
def lock_timeout(seconds: float | None) -> Iterator[None]:
    """Use ``seconds`` (None: no library timeout) as the lock timeout for appends below."""
    timeout_ms(seconds)  # validate now
    token = _context.set(seconds)
    try:
        yield
    finally:
        _context.reset(token)


def resolve_lock_timeout(
    per_call: float | None | _Default, store_default: float | None
) -> float | None:
    """The lock timeout in force: the call's, else the context's, else the store's."""
    if not isinstance(per_call, _Default):
        return per_call
    from_context = _context.get()
    return store_default if isinstance(from_context, _Default) else from_context
