"""Checks shared by the domain models: text that PostgreSQL can store, JSON that jsonb accepts."""

from __future__ import annotations

import json
import math
from typing import Any

from dcb_store.limits import MAX_TAG_LENGTH, MAX_TYPE_LENGTH

LOCK_PREFIX = "lock:"


def check_text(value: str, what: str) -> str:
    """Reject what PostgreSQL text cannot hold: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{what} must be valid Unicode (a lone surrogate cannot be stored)"
            ) from None
    return value


def check_type(value: str) -> str:
    """An event type: non-empty, at most MAX_TYPE_LENGTH characters, no NUL."""
    if not value:
        raise ValueError("event type must not be empty")
    if len(value) > MAX_TYPE_LENGTH:
        raise ValueError(f"event type is longer than {MAX_TYPE_LENGTH} characters")
    return check_text(value, "event type")


def check_tag(value: str, *, allow_lock: bool) -> str:
    """A tag: non-empty, bounded, no NUL; ``lock:`` only where an append may take locks."""
    if not value:
        raise ValueError("tags must not be empty strings")
    if len(value) > MAX_TAG_LENGTH:
        raise ValueError(f"tag is longer than {MAX_TAG_LENGTH} characters")
    check_text(value, "tag")
    if value.startswith(LOCK_PREFIX):
        if not allow_lock:
            raise ValueError(
                f"tag {value!r}: 'lock:' is an instruction to append, not a stored tag; "
                "query the tag without the prefix"
            )
        if len(value) == len(LOCK_PREFIX):
            raise ValueError("a bare 'lock:' tag names no key")
    return value


def check_json(value: Any, what: str) -> Any:
    """Accept only what jsonb stores faithfully: JSON types, finite numbers, no NUL in strings."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{what} holds a non-finite number, which JSON cannot carry")
        elif isinstance(item, str):
            check_text(item, what)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"{what} has a non-string object key {key!r}")
                check_text(key, what)
                stack.append(sub)
        else:
            raise ValueError(f"{what} is not JSON: {type(item).__name__} {item!r}")
    return value


def dumps(value: Any) -> str:
    """Serialize checked JSON compactly."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
