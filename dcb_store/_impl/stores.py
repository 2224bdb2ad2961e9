"""Several stores in one database: a store's name, its lock space, and its SQL.

A store lives in a schema of its own; ``dcb`` is the default store. The packaged SQL (and the
statements of :mod:`dcb_store._impl.statements`) is written for ``dcb``; :func:`render` turns it
into another store's SQL at load time. For ``dcb`` it returns the text unchanged, byte for byte.

What :func:`render` changes for a store ``s`` (docs/usage.md, "Several stores in one database"):

- schema references: ``dcb.x`` and ``SCHEMA dcb`` become ``"s".x`` and ``SCHEMA "s"`` (a quoted
  identifier); inside string literals (``'dcb.append_v3(...)'::regprocedure``, ``'dcb'``,
  relation names, setting names) the bare name ``s``, which the name's check makes safe;
- settings: ``dcb.in_flight_marker``, ``dcb.hot_tags``, ``dcb.hot_tags_refreshed``,
  ``dcb.allow_erasure`` become ``s.in_flight_marker`` etc. (one marker per store and
  transaction); channel ``dcb_events`` becomes ``s_events``;
- the advisory-lock space. The default store's 64-bit keys have top byte 0xDC (key locks, the
  low 56 bits a hash of the key's name), 0xDD (in-flight markers, the low 56 bits a position),
  0xDE (notify key) and 0xDF (trace pruner). Another store takes top bytes 0xD8 to 0xDB for the
  same four, then its 12-bit store id (:func:`store_id`), then 44 bits of hash or position.
  Every store's keys therefore differ from every other's in the top 20 bits: the default's by
  the top byte, two other stores' by their ids, which the migrations refuse to let collide in
  one database. Nothing is left to hash luck between stores. A store's hash seed also differs
  (:func:`hash_seed`). Its positions stop at 2**44 - 1 (the position sequence's MAXVALUE,
  17.6 trillion events), so a marker's position never spills into the id.
"""

from __future__ import annotations

import functools
import hashlib
import re

from dcb_store.errors import InvalidInputError

__all__ = [
    "DEFAULT",
    "channel",
    "check_schema",
    "hash_seed",
    "quoted",
    "render",
    "setting",
    "store_id",
]

DEFAULT = "dcb"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_ID_BITS = 12
_LOW_BITS = 44  # bits of hash or position below the store id
_LOW_MASK = (1 << _LOW_BITS) - 1
_BYTE_SHIFT = 4  # another store's top bytes: the default's minus 4 (0xDC..0xDF -> 0xD8..0xDB)
_DEFAULT_SEED = 1145258579


def check_schema(schema: object) -> str:
    """``schema`` if it can name a store (a schema, a setting prefix and a channel), else raise."""
    if not isinstance(schema, str) or not _NAME.fullmatch(schema) or schema.startswith("pg_"):
        raise InvalidInputError(
            f"a store's schema must match [a-z_][a-z0-9_]{{0,40}} and not start with pg_, "
            f"got {schema!r}"
        )
    return schema


def quoted(schema: str) -> str:
    """``schema`` as an SQL identifier (always quoted)."""
    return '"' + check_schema(schema).replace('"', '""') + '"'


def channel(schema: str) -> str:
    """The NOTIFY channel of the store: ``dcb_events`` for the default."""
    return f"{check_schema(schema)}_events"


def setting(schema: str, name: str) -> str:
    """The name of one of the store's settings (``dcb.in_flight_marker`` for the default)."""
    return f"{check_schema(schema)}.{name}"


def _digest(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big")


def store_id(schema: str) -> int | None:
    """The 12-bit id in the store's lock keys; None for the default store (its own top bytes)."""
    if check_schema(schema) == DEFAULT:
        return None
    return _digest(schema) >> (64 - _ID_BITS)


def hash_seed(schema: str) -> int:
    """The seed of ``hashtextextended`` for the store's key locks."""
    if check_schema(schema) == DEFAULT:
        return _DEFAULT_SEED
    return _digest(schema) & 0x7FFF_FFFF


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _lock_literals(schema: str) -> dict[str, str]:
    """The default's lock-space literals and what they become in ``schema``'s SQL."""
    sid = store_id(schema)
    assert sid is not None

    def key64(top: int) -> str:  # 0xDC00000000000000-style constants, as signed bigints
        return str(_signed(((top - _BYTE_SHIFT) << 56) | (sid << _LOW_BITS), 64))

    def class32(top: int, signed: bool) -> str:  # the high int4 of the two-int4 form
        value = ((top - _BYTE_SHIFT) << 24) | (sid << (_LOW_BITS - 32))
        return str(_signed(value, 32) if signed else value)

    return {
        str(_DEFAULT_SEED): str(hash_seed(schema)),
        str((1 << 56) - 1): str(_LOW_MASK),
        str(_signed(0xDC << 56, 64)): key64(0xDC),
        str(_signed(0xDD << 56, 64)): key64(0xDD),
        str(_signed(0xDE << 24, 32)): class32(0xDE, True),  # notify key (-570425344, 0)
        str(0xDE << 24): class32(0xDE, False),  # its classid as pg_locks shows it
        str(_signed(0xDF << 24, 32)): class32(0xDF, True),  # pruner key (-553648128, 1)
    }


def _prefix(schema: str, top: int) -> int:
    """The top 20 bits of the store's keys of the default's top byte ``top``."""
    sid = store_id(schema)
    assert sid is not None
    return ((top - _BYTE_SHIFT) << _ID_BITS) | sid


_TOKENS = re.compile(
    r"(?P<lit>'dcb(?=[.']))"  # 'dcb.x' and 'dcb' in string literals: the bare name
    r"|(?P<chan>(?<![\w$])dcb_events(?![\w$]))"
    r"|(?P<ident>(?<![\w$\"'])dcb(?![\w$]))"  # dcb.x, SCHEMA dcb: a quoted identifier
    r"|(?P<num>(?<![\w.])-?\d+(?![\w.]))"
    r"|(?P<cls>>> 24\) (?:IN \((?P<cls_in>\d+(?:, \d+)*)\)|= (?P<cls_eq>\d+)))"
    r"|(?P<top>>> 56\) & 255 = (?P<top_eq>\d+))"
)
# what no store's SQL but the default's may contain: a pattern render() does not know yet
_LEFTOVER = re.compile(
    r"1145258579|72057594037927935|2594073385365405696|2522015791327477760|570425344"
    r"|3724541952|553648128|>> ?24\)|>> ?56\)|(?<![\w$\"'])dcb_events|(?<![\w$\"'])dcb\."
)
_SEQUENCE = "CREATE SEQUENCE dcb.events_position_seq AS bigint"


@functools.lru_cache(maxsize=256)
def render(sql: str, schema: str = DEFAULT) -> str:
    """The store ``schema``'s version of SQL written for the default store ``dcb``."""
    if check_schema(schema) == DEFAULT:
        return sql
    literals = _lock_literals(schema)
    name = schema
    ident = quoted(schema)

    def replace(m: re.Match[str]) -> str:
        if m.group("lit"):
            return "'" + name
        if m.group("chan"):
            return channel(name)
        if m.group("ident"):
            return ident
        if m.group("num"):
            return literals.get(m.group("num"), m.group("num"))
        if m.group("cls"):
            tops = (m.group("cls_in") or m.group("cls_eq")).split(", ")
            values = ", ".join(str(_prefix(name, int(t))) for t in tops)
            return f">> 12) IN ({values})" if m.group("cls_in") else f">> 12) = {values}"
        return f">> 44) & 1048575 = {_prefix(name, int(m.group('top_eq')))}"

    sql = sql.replace(_SEQUENCE, f"{_SEQUENCE} MAXVALUE {_LOW_MASK}")
    rendered = _TOKENS.sub(replace, sql)
    leftover = _LEFTOVER.search(_strip_comments(rendered))
    if leftover:
        raise RuntimeError(
            f"dcb_store cannot render SQL for store {schema!r}: it holds {leftover.group()!r}, "
            "a lock-space or schema form dcb_store._impl.stores does not know"
        )
    return rendered


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)
