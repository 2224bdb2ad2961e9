"""Hooks around the store's operations, for metrics and tracing.

See dcb_store.metrics and dcb_store.tracing. A hook is called with the operation's name and
attributes and returns a context manager entered around the operation; the operation's
exceptions pass through it. Observing never changes an outcome: a hook's own error (on
entering or leaving) is logged to the ``dcb_store.observing`` logger and not raised, and a
hook cannot swallow the operation's error. (An append whose row was written and a hook raised
after it would report a failure the caller's commit then makes a lie of.) With no hook
installed the stores pay nothing but an empty-list check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from types import TracebackType
from typing import Any

__all__ = ["Hook", "add_hook", "observed", "remove_hook"]

Hook = Callable[[str, dict[str, Any]], AbstractContextManager[Any]]
_hooks: list[Hook] = []
logger = logging.getLogger("dcb_store.observing")


def add_hook(hook: Hook) -> None:
    """Call ``hook`` around every store operation from now on."""
    _hooks.append(hook)


def remove_hook(hook: Hook) -> None:
    """Stop calling ``hook``."""
    _hooks.remove(hook)


class _Contained:
    """One hook around one operation, its errors logged, its exit never suppressing."""

    def __init__(self, hook: Hook, operation: str) -> None:
        self._hook, self._operation = hook, operation
        self._entered: AbstractContextManager[Any] | None = None

    def enter(self, attributes: dict[str, Any]) -> None:
        try:
            manager = self._hook(self._operation, attributes)
            manager.__enter__()
        except Exception:
            logger.exception(
                "observation hook %r failed on entering %s", self._hook, self._operation
            )
        else:
            self._entered = manager

    def leave(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._entered is not None:
            try:
                self._entered.__exit__(kind, error, traceback)
            except Exception:
                logger.exception(
                    "observation hook %r failed on leaving %s", self._hook, self._operation
                )
        # (returns None: the operation's own error, if any, goes on)


@contextmanager
def observed(
    operation: str, attributes: dict[str, Any] | None = None, **more: Any
) -> Iterator[None]:
    """Run the block inside every installed hook (none: no cost).

    ``attributes`` is handed to the hooks as is: what the block adds to it before it ends (a
    lock wait, say) is there when the hooks exit.
    """
    attributes = {**more} if attributes is None else attributes
    if not _hooks:
        yield
        return
    with ExitStack() as stack:
        for hook in list(_hooks):
            contained = _Contained(hook, operation)
            contained.enter(attributes)
            stack.push(contained.leave)
        yield
