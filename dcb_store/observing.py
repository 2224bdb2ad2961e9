"""Hooks around the store's operations, for metrics and tracing.

See dcb_store.metrics and dcb_store.tracing. A hook is called with the operation's name and
attributes and returns a context manager entered around the operation; exceptions pass through
it. With no hook installed the stores pay nothing but an empty-list check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

__all__ = ["Hook", "add_hook", "observed", "remove_hook"]

Hook = Callable[[str, dict[str, Any]], AbstractContextManager[Any]]
_hooks: list[Hook] = []


def add_hook(hook: Hook) -> None:
    """Call ``hook`` around every store operation from now on."""
    _hooks.append(hook)


def remove_hook(hook: Hook) -> None:
    """Stop calling ``hook``."""
    _hooks.remove(hook)


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
            stack.enter_context(hook(operation, attributes))
        yield
