"""Checks shared by the domain models: text that PostgreSQL can store, JSON that jsonb accepts.

Every check raises :class:`InvalidInputError`. Inside a pydantic validator pydantic wraps it in a
``ValidationError``; the models' constructors unwrap it again (:func:`reraise_invalid`), so that
``Event(...)``, ``Query(...)`` and ``AppendCondition(...)`` raise a plain InvalidInputError.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError

from dcb_store.errors import InvalidInputError
from dcb_store.limits import MAX_JSON_DEPTH, MAX_POSITION, MAX_TAG_LENGTH, MAX_TYPE_LENGTH

LOCK_PREFIX = "lock:"
# str(int) refuses more than 4,300 digits (sys.int_info.default_max_str_digits): an integer
# with more bits could be stored through SQL but neither sent nor read back by Python.
_MAX_INT_BITS = 14_000


def reraise_invalid(exc: ValidationError) -> None:
    """Raise the InvalidInputError one of our validators raised inside ``exc``, if any."""
    for error in exc.errors(include_url=False, include_input=False):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, InvalidInputError):
            raise InvalidInputError(str(cause)) from exc


def check_text(value: str, what: str) -> str:
    """Reject what PostgreSQL text cannot hold: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise InvalidInputError(f"{what} must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"{what} must be valid Unicode (a lone surrogate cannot be stored)"
            ) from None
    return value


def check_type(value: str) -> str:
    """An event type: non-empty, at most MAX_TYPE_LENGTH characters, no NUL."""
    if not value:
        raise InvalidInputError("event type must not be empty")
    if len(value) > MAX_TYPE_LENGTH:
        raise InvalidInputError(f"event type is longer than {MAX_TYPE_LENGTH} characters")
    return check_text(value, "event type")


def check_tag(value: str, *, allow_lock: bool) -> str:
    """A tag: non-empty, bounded, no NUL; ``lock:`` only where an append may take locks."""
    if not value:
        raise InvalidInputError("tags must not be empty strings")
    if len(value) > MAX_TAG_LENGTH:
        raise InvalidInputError(f"tag is longer than {MAX_TAG_LENGTH} characters")
    check_text(value, "tag")
    if value.startswith(LOCK_PREFIX):
        if not allow_lock:
            raise InvalidInputError(
                f"tag {value!r}: 'lock:' is an instruction to append, not a stored tag; "
                "query the tag without the prefix"
            )
        if len(value) == len(LOCK_PREFIX):
            raise InvalidInputError("a bare 'lock:' tag names no key")
    return value


def check_count(value: Any, limit: int, what: str) -> Any:
    """Reject a sized value with more than ``limit`` elements (before validating each one)."""
    if isinstance(value, (list, tuple, set, frozenset, dict)) and len(value) > limit:
        raise InvalidInputError(f"{what}: at most {limit:,} (dcb_store.limits), got {len(value):,}")
    return value


def check_position(value: int | None, name: str) -> int | None:
    """A position (or None): a non-negative int that fits a PostgreSQL bigint."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative int or None, got {value!r}")
    if value > MAX_POSITION:
        raise InvalidInputError(
            f"{name} must be at most {MAX_POSITION} (a PostgreSQL bigint), got {value}"
        )
    return value


def check_json(value: Any, what: str, max_bytes: int) -> Any:
    """Accept only what jsonb stores faithfully and every reader decodes.

    JSON types, finite numbers, no NUL or lone surrogate in strings, containers nested at most
    MAX_JSON_DEPTH deep, and at most ``max_bytes`` of compact JSON text. One pass, level by
    level (no recursion, whatever the depth); the text is only serialized to measure it when a
    cheap upper bound of its size exceeds the limit.
    """
    upper = 0  # an upper bound of the size of the JSON text, in UTF-8 bytes
    depth = 0
    level = [value]
    while level:
        nested: list[Any] = []
        containers = False
        for item in level:
            if item is None or isinstance(item, bool):
                upper += 6
            elif isinstance(item, int):
                bits = item.bit_length()
                if bits > _MAX_INT_BITS:
                    raise InvalidInputError(f"{what} holds an integer of more than 4,000 digits")
                upper += bits // 3 + 3
            elif isinstance(item, float):
                if not math.isfinite(item):
                    raise InvalidInputError(
                        f"{what} holds a non-finite number, which JSON cannot carry"
                    )
                upper += 26
            elif isinstance(item, str):
                check_text(item, what)
                upper += 6 * len(item) + 3  # every character escaped, quotes, a separator
            elif isinstance(item, (list, tuple)):
                containers = True
                nested.extend(item)
                upper += 2 + len(item)
            elif isinstance(item, dict):
                containers = True
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise InvalidInputError(f"{what} has a non-string object key {key!r}")
                    check_text(key, what)
                    upper += 6 * len(key) + 4
                    nested.append(sub)
                upper += 2
            else:
                raise InvalidInputError(f"{what} is not JSON: {type(item).__name__} {item!r}")
        if containers:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise InvalidInputError(
                    f"{what} nests JSON containers deeper than {MAX_JSON_DEPTH} levels "
                    "(dcb_store.limits.MAX_JSON_DEPTH)"
                )
        level = nested
    if upper > max_bytes:
        size = len(dumps(value).encode("utf-8"))
        if size > max_bytes:
            raise InvalidInputError(
                f"{what} is {size:,} bytes of JSON, more than the limit of {max_bytes:,} "
                "(dcb_store.limits)"
            )
    return value


def dumps(value: Any) -> str:
    """Serialize checked JSON compactly."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
